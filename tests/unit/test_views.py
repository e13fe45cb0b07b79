"""The HTTP views in process (aiohttp's TestClient over the product's Faust web app), with Kafka
and Redis unreachable: bad input is refused with a 400 that names it, and reads keep answering."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import prometheus_client
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from app import ranker
from app.factory import Product, create_app
from app.popularity import Trending
from app.settings import Settings

NOW = time.time()


@pytest_asyncio.fixture(scope="module")
async def product(tmp_path_factory) -> AsyncIterator[Product]:
    settings = Settings(
        app_id=f"unit-views-{uuid.uuid4().hex[:8]}",
        kafka_broker="kafka://127.0.0.1:1",
        redis_url="redis://127.0.0.1:1/0",
        store="memory://",
        data_dir=str(tmp_path_factory.mktemp("views")),
    )
    product = create_app(settings)
    product.faust.loop = asyncio.get_running_loop()
    product.faust.finalize()
    product.faust.web.init_server()
    half_life = settings.popularity_half_life
    product.recovery.popular[half_life] = Trending(  # as last read from Redis before it went away
        [
            (item, ranker.decayed_log_score(weight, NOW, half_life))
            for item, weight in [("i1", 3.0), ("i2", 2.0), ("i3", 1.0)]
        ],
        NOW,
    )
    yield product
    product.refresher.close()
    await product.stores.close()


@pytest_asyncio.fixture(scope="module")
async def client(product) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(product.faust.web.web_app)) as client:
        yield client


@pytest.mark.parametrize("n", ["0", "101", "ten", "-1", "²"])
async def test_recommend_with_a_bad_n_is_refused_naming_n(client, n):
    response = await client.get("/recommend/u", params={"n": n})

    assert response.status == 400
    assert await response.json() == {"error": "n: must be a whole number from 1 to 100"}


async def test_events_with_a_body_that_is_not_json_are_refused_naming_the_body(client):
    response = await client.post("/events", data=b'{"user_id": "u"')

    assert response.status == 400
    assert (await response.json())["error"].startswith("body: not valid JSON: ")


async def test_events_with_an_invalid_event_are_refused_naming_index_field_and_problem(client):
    valid = {"user_id": "u", "item_id": "i1", "action": "click"}
    body = {"events": [valid, {"user_id": "u", "action": "click"}]}

    response = await client.post("/events", data=orjson.dumps(body))

    assert response.status == 400
    assert await response.json() == {
        "error": "invalid event",
        "index": 1,
        "field": "item_id",
        "problem": "is required",
    }


async def test_recommend_while_redis_is_unreachable_answers_the_popular_list(client, product):
    response = await client.get("/recommend/u", params={"n": "2"})

    assert response.status == 200
    body = await response.json()
    expected = product.recovery.list_without_redis("u")
    assert (body["user_id"], body["source"], body["model_version"]) == ("u", "popular", None)
    assert [entry["item_id"] for entry in body["items"]] == ["i1", "i2"]
    assert [entry["score"] for entry in body["items"]] == pytest.approx(
        [score for _, score in expected["items"][:2]], rel=1e-6
    )


async def test_a_session_while_redis_is_unreachable_gets_the_popular_items_it_has_not_seen(
    client,
):
    response = await client.post("/recommend", params={"n": "2"}, json={"items": ["i1"]})

    assert response.status == 200
    body = await response.json()
    assert (body["source"], body["event_count"]) == ("popular", 1)
    assert [entry["item_id"] for entry in body["items"]] == ["i2", "i3"]


@pytest.mark.parametrize(
    ("params", "body", "problem"),
    [
        ({"n": "0"}, {"items": ["i1"]}, "n: must be a whole number from 1 to 100"),
        ({}, {"items": [{"action": "view"}]}, "item_id"),
        ({}, {"item": "i1"}, "items"),
    ],
)
async def test_a_bad_session_request_is_refused_naming_the_problem(client, params, body, problem):
    response = await client.post("/recommend", params=params, json=body)

    assert response.status == 400
    assert problem in orjson.dumps(await response.json()).decode()


async def test_health_while_redis_is_unreachable_is_503_with_redis_false(client):
    response = await client.get("/health")

    assert response.status == 503
    assert await response.json() == {
        "status": "starting",
        "recovered": False,
        "redis": False,
        "model_version": None,
        "last_check": None,
        "candidates_refused": 0,
        "last_rollback": None,
    }


REQUESTS_TIMED = "recsys_http_request_duration_seconds_count"


@pytest.mark.parametrize(
    ("path", "route", "status"),
    [
        ("/recommend/visitor-7f3a?n=0", "/recommend/{user_id}", "400"),
        ("/visitor-7f3a", "unmatched", "404"),
    ],
    ids=["under its route template", "an unknown path as unmatched"],
)
async def test_a_request_is_timed_by_route_and_status_never_by_its_path(
    client, path, route, status
):
    labels = {"route": route, "status": status}
    before = prometheus_client.REGISTRY.get_sample_value(REQUESTS_TIMED, labels) or 0.0

    response = await client.get(path)

    assert response.status == int(status)
    assert prometheus_client.REGISTRY.get_sample_value(REQUESTS_TIMED, labels) == before + 1
    assert b"visitor-7f3a" not in prometheus_client.generate_latest()


async def test_livez_answers_200_with_kafka_and_redis_unreachable(client):
    response = await client.get("/livez")

    assert response.status == 200
    assert await response.json() == {"status": "live"}


async def test_readyz_before_the_tables_recovered_is_503_with_retry_after(client):
    response = await client.get("/readyz")

    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert await response.json() == {"status": "recovering", "recovered": False}


async def test_an_unknown_path_is_answered_in_the_one_error_shape(client):
    response = await client.get("/no-such-page")

    assert response.status == 404
    assert await response.json() == {"error": "GET /no-such-page: not found"}


async def test_the_docs_page_and_its_swagger_ui_assets_are_served_from_the_package(client):
    page = await client.get("/docs")
    bundle = await client.get("/docs/static/swagger-ui-bundle.js")

    assert page.status == 200
    assert "/openapi.json" in await page.text()
    assert bundle.status == 200
    assert "SwaggerUIBundle" in await bundle.text()


async def test_popular_with_fields_title_adds_each_items_title_or_null(client, product):
    product.refresher.catalogue = dataclasses.replace(
        product.refresher.catalogue, titles={"i1": "Enamel jug"}
    )

    response = await client.get("/popular", params={"n": "2", "fields": "title"})

    assert response.status == 200
    items = (await response.json())["items"]
    assert [(entry["item_id"], entry["title"]) for entry in items] == [
        ("i1", "Enamel jug"),
        ("i2", None),
    ]


async def test_an_unknown_fields_value_is_refused_naming_fields(client):
    response = await client.get("/popular", params={"fields": "price"})

    assert response.status == 400
    assert await response.json() == {"error": "fields: must be title, got 'price'"}
