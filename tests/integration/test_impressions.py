"""Impressions and negative actions on the real Kafka and Redis: an item shown to a user the
configured number of times without a reaction goes to the end of their list, and a ``dislike``
takes an item out of it and out of the user's positives."""

from __future__ import annotations

from harness.http import eventually, get_json, post_json
from harness.worker import running_worker, worker_env

POPULAR = {"hot0": 4, "hot1": 3, "hot2": 2, "hot3": 1}
"""Item -> purchases by the crowd: the popular list is hot0, hot1, hot2, hot3."""
LIMIT = 2


def crowd() -> list[dict]:
    return [
        {"user_id": f"crowd{n}", "item_id": item, "action": "purchase"}
        for item, buyers in POPULAR.items()
        for n in range(buyers)
    ]


async def settled_list(
    http, url: str, user_id: str, event_count: int, impressions: dict, popular: int = 4
):
    """The user's state and list once the state shows these events and impressions and the
    list holds ``popular`` of the popular items."""
    status, state = await get_json(http, f"{url}/users/{user_id}")
    if status != 200 or (state["event_count"], state["impressions"]) != (event_count, impressions):
        return None
    _, listed = await get_json(http, f"{url}/recommend/{user_id}?n=10")
    items = [entry["item_id"] for entry in listed["items"]]
    return (state, items) if len(set(items) & set(POPULAR)) == popular else None


async def test_an_item_shown_the_limit_times_without_a_reaction_goes_last(tmp_path, http):
    env = worker_env(
        tmp_path, RECSYS_RUN_TRAINER="false", RECSYS_IMPRESSION_LIMIT=str(LIMIT)
    )  # no model: popular lists
    own = {"user_id": "browser", "item_id": "quiet", "action": "view"}
    shown = {"user_id": "browser", "item_id": "hot0", "action": "impression"}
    with running_worker(env, tmp_path / "worker.log") as worker:
        assert (await post_json(http, f"{worker.url}/events", {"events": [*crowd(), own]}))[
            0
        ] == 202
        _, before = await eventually(
            lambda: settled_list(http, worker.url, "browser", 1, {}), within=20, interval=0.2
        )
        assert before[:4] == ["hot0", "hot1", "hot2", "hot3"]

        assert (await post_json(http, f"{worker.url}/events", {"events": [shown]}))[0] == 202
        _, once = await eventually(
            lambda: settled_list(http, worker.url, "browser", 1, {"hot0": 1}), within=20
        )
        assert once == before, "shown fewer times than the limit, it keeps its place"

        assert (await post_json(http, f"{worker.url}/events", {"events": [shown]}))[0] == 202
        state, after = await eventually(
            lambda: settled_list(http, worker.url, "browser", 1, {"hot0": LIMIT}), within=20
        )
        assert after == ["hot1", "hot2", "hot3", "hot0"]
        assert list(state["interactions"]) == ["quiet"], "a showing is no interaction"


async def test_a_dislike_takes_the_item_out_of_the_list_and_the_positives(tmp_path, http):
    env = worker_env(tmp_path, RECSYS_RUN_TRAINER="false")
    bought = [{"user_id": "fickle", "item_id": "gift", "action": "purchase"}] * 2
    with running_worker(env, tmp_path / "worker.log") as worker:
        events = [*crowd(), *bought]
        assert (await post_json(http, f"{worker.url}/events", {"events": events}))[0] == 202
        _, before = await eventually(
            lambda: settled_list(http, worker.url, "fickle", 2, {}), within=20, interval=0.2
        )
        assert "hot1" in before

        dislikes = [
            {"user_id": "fickle", "item_id": item, "action": "dislike"} for item in ("hot1", "gift")
        ]
        assert (await post_json(http, f"{worker.url}/events", {"events": dislikes}))[0] == 202
        state, after = await eventually(
            lambda: settled_list(http, worker.url, "fickle", 4, {}, popular=3),
            within=20,
            interval=0.2,
        )
        assert after == [item for item in before if item != "hot1"]
        weights = {item: entry["weight"] for item, entry in state["interactions"].items()}
        assert weights == {"gift": 0.0, "hot1": -1.0}
