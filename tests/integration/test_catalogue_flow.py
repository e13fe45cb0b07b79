"""The item catalogue end to end on the real Kafka and Redis: POST /items -> topic items ->
Redis -> content-based lists, filters, unavailable items and content /similar."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.commands import run_app
from harness.http import eventually, get_json, post_json


def catalogue_item(kind: str, number: int, **fields) -> dict:
    described = {
        "lamp": ("Brass desk lamp", ["lamp", "brass"], ["lighting"]),
        "mug": ("Stoneware coffee mug", ["mug", "coffee"], ["kitchen"]),
    }
    title, tags, categories = described[kind]
    return {
        "item_id": f"{kind}-{number}",
        "title": f"{title} model{number}",
        "tags": tags,
        "categories": categories,
        **fields,
    }


@pytest.fixture(scope="module")
async def catalogued(worker, http):
    """Six lamps and six mugs in the catalogue, all viewed a little."""
    items = [catalogue_item(kind, n) for kind in ("lamp", "mug") for n in range(6)]
    assert (await post_json(http, f"{worker.url}/items", {"items": items})) == (
        202,
        {"accepted": 12},
    )
    views = [
        {"user_id": f"browser-{n}", "item_id": item["item_id"], "action": "view"}
        for n, item in enumerate(items)
    ]
    assert (await post_json(http, f"{worker.url}/events", {"events": views}))[0] == 202

    async def catalogue_served():
        status, body = await get_json(http, f"{worker.url}/similar/mug-0")
        return body if status == 200 else None

    await eventually(catalogue_served, within=15, interval=0.2)
    return worker


async def test_an_invalid_item_gets_400_naming_index_field_and_problem(worker, http):
    body = {"items": [catalogue_item("lamp", 9), {"item_id": "x", "available": "yes"}]}
    status, answer = await post_json(http, f"{worker.url}/items", body)
    assert status == 400
    assert (answer["index"], answer["field"]) == (1, "available")


async def test_a_user_with_little_history_gets_items_like_theirs_first(catalogued, http):
    assert (
        await post_json(
            http,
            f"{catalogued.url}/events",
            {"user_id": "kim", "item_id": "lamp-0", "action": "view"},
        )
    )[0] == 202

    async def content_list():
        _, body = await get_json(http, f"{catalogued.url}/recommend/kim?n=5")
        return body if body["source"] == "content" else None

    body = await eventually(content_list, within=10, interval=0.1)
    top = [entry["item_id"] for entry in body["items"]]
    assert top == sorted(top, key=lambda item: not item.startswith("lamp"))
    assert {item.split("-")[0] for item in top} == {"lamp"}
    assert "lamp-0" not in top


async def test_category_and_exclude_filters_narrow_the_list(catalogued, http):
    await post_json(
        http, f"{catalogued.url}/events", {"user_id": "lee", "item_id": "lamp-1", "action": "view"}
    )

    async def own_list():
        _, body = await get_json(http, f"{catalogued.url}/recommend/lee?n=50")
        return body if body["source"] == "content" else None

    everything = [e["item_id"] for e in (await eventually(own_list, within=10))["items"]]
    _, kitchen = await get_json(http, f"{catalogued.url}/recommend/lee?n=50&category=kitchen")
    assert [e["item_id"] for e in kitchen["items"]] == [
        i for i in everything if i.startswith("mug")
    ]
    dropped = everything[:2]
    _, fewer = await get_json(
        http, f"{catalogued.url}/recommend/lee?n=50&exclude={','.join(dropped)}"
    )
    assert [e["item_id"] for e in fewer["items"]] == everything[2:]


async def test_an_unavailable_item_is_never_recommended_nor_similar(catalogued, http):
    gone = catalogue_item("lamp", 3, available=False)
    assert (await post_json(http, f"{catalogued.url}/items", gone))[0] == 202

    async def hidden_everywhere():
        _, listed = await get_json(http, f"{catalogued.url}/recommend/kim?n=50")
        _, similar = await get_json(http, f"{catalogued.url}/similar/lamp-4?n=50")
        ids = [e["item_id"] for e in listed["items"] + similar["items"]]
        return True if ids and "lamp-3" not in ids else None

    await eventually(hidden_everywhere, within=10, interval=0.2)
    _, popular_list = await get_json(http, f"{catalogued.url}/recommend/nobody-new?n=50")
    assert "lamp-3" not in [e["item_id"] for e in popular_list["items"]]


async def test_an_item_hidden_until_later_is_in_no_list_and_its_record_says_until_when(
    catalogued, http
):
    until = time.time() + 3600
    hidden = catalogue_item("mug", 3, hidden_until=until)
    assert (await post_json(http, f"{catalogued.url}/items", hidden))[0] == 202

    async def hidden_everywhere():
        _, listed = await get_json(http, f"{catalogued.url}/recommend/kim?n=50")
        _, similar = await get_json(http, f"{catalogued.url}/similar/mug-4?n=50")
        _, popular = await get_json(http, f"{catalogued.url}/popular?n=50")
        ids = [e["item_id"] for e in listed["items"] + similar["items"] + popular["items"]]
        return True if ids and "mug-3" not in ids else None

    await eventually(hidden_everywhere, within=10, interval=0.2)
    _, record = await get_json(http, f"{catalogued.url}/items/mug-3")
    assert record["hidden_until"] == pytest.approx(until)


async def test_similar_falls_back_to_catalogue_content_for_items_without_factors(worker, http):
    fresh = catalogue_item("mug", 40)
    assert (await post_json(http, f"{worker.url}/items", fresh))[0] == 202

    async def similar():
        status, body = await get_json(http, f"{worker.url}/similar/mug-40?n=3")
        return body if status == 200 else None

    body = await eventually(similar, within=10, interval=0.2)
    assert body["source"] == "content"
    assert [e["item_id"].split("-")[0] for e in body["items"]] == ["mug", "mug", "mug"]


async def test_an_item_is_read_back_as_stored_with_its_defaults(catalogued, http):
    status, body = await get_json(http, f"{catalogued.url}/items/mug-2")

    assert status == 200
    assert body == {
        "item_id": "mug-2",
        "title": "Stoneware coffee mug model2",
        "description": "",
        "categories": ["kitchen"],
        "tags": ["mug", "coffee"],
        "available": True,
        "hidden_until": None,
    }


async def test_an_item_not_in_the_catalogue_is_404_naming_it(worker, http):
    status, body = await get_json(http, f"{worker.url}/items/never-posted")

    assert (status, body) == (404, {"error": "item 'never-posted' is not in the catalogue"})


async def test_load_items_posts_a_catalogue_csv_that_is_read_back(worker, http, tmp_path):
    catalogue = tmp_path / "items.csv"
    catalogue.write_text("item_id,title,categories\nloaded-1,Enamel jug,kitchen|jugs\n")

    done = await asyncio.to_thread(
        run_app, ["load-items", str(catalogue), "--url", worker.url], worker.env, 60
    )

    assert done.returncode == 0, done.stderr
    assert "loaded 1 items" in done.stdout

    async def read_back() -> dict | None:
        status, body = await get_json(http, f"{worker.url}/items/loaded-1")
        return body if status == 200 else None

    body = await eventually(read_back, within=15, interval=0.2)
    assert (body["title"], body["categories"]) == ("Enamel jug", ["kitchen", "jugs"])
