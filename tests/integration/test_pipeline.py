"""End to end on the real Kafka and Redis: HTTP or Kafka -> agents -> table -> Redis -> HTTP."""

from __future__ import annotations

import json
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from harness.data import seed_history
from harness.http import eventually, get_json, post_json
from harness.kafka import records_logged
from harness.services import KAFKA_BOOTSTRAP

FRESHNESS_LIMIT = 2.0


@pytest.fixture(scope="module")
async def trained(worker, http):
    """A worker whose model knows the seed history; returns a user whose personal list has taken in
    all of that user's seed events, so a test's next event is the only change it sees."""
    history = seed_history()
    status, state = await get_json(http, f"{worker.url}/users/seed-a0")  # other modules seed too
    counted = (state["event_count"] if status == 200 else 0) + sum(
        event["user_id"] == "seed-a0" for event in history
    )
    status, body = await post_json(http, f"{worker.url}/events", {"events": history})
    assert (status, body) == (202, {"accepted": 240})

    async def personal():
        _, body = await get_json(http, f"{worker.url}/recommend/seed-a0")
        settled = body["source"] == "personal" and body["event_count"] == counted
        return body if settled else None

    await eventually(personal, within=30, interval=0.2)
    return "seed-a0"


async def wait_for_change(http, url: str, before: dict, gone_item: str) -> tuple[dict, float]:
    started = time.monotonic()

    async def changed():
        _, body = await get_json(http, url)
        ids = [entry["item_id"] for entry in body["items"]]
        return body if body["updated_at"] > before["updated_at"] and gone_item not in ids else None

    body = await eventually(changed, within=FRESHNESS_LIMIT + 1)
    return body, time.monotonic() - started


async def test_an_event_posted_over_http_changes_that_users_recommendations_within_2s(
    worker, http, trained
):
    url = f"{worker.url}/recommend/{trained}?n=5"
    _, before = await get_json(http, url)
    clicked = before["items"][0]["item_id"]
    status, _ = await post_json(
        http, f"{worker.url}/events", {"user_id": trained, "item_id": clicked, "action": "click"}
    )
    assert status == 202
    after, elapsed = await wait_for_change(http, url, before, clicked)
    assert elapsed < FRESHNESS_LIMIT
    assert after["event_count"] == before["event_count"] + 1
    assert after["source"] == "personal"
    assert after["model_version"] is not None
    assert len(after["items"]) == 5


async def test_an_event_produced_straight_to_kafka_changes_recommendations_within_2s(
    worker, http, trained
):
    url = f"{worker.url}/recommend/{trained}?n=5"
    _, before = await get_json(http, url)
    viewed = before["items"][0]["item_id"]
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP)
    await producer.start()
    try:
        value = {"user_id": trained, "item_id": viewed, "action": "view"}
        await producer.send_and_wait(worker.topic, json.dumps(value).encode(), key=trained.encode())
    finally:
        await producer.stop()
    _, elapsed = await wait_for_change(http, url, before, viewed)
    assert elapsed < FRESHNESS_LIMIT


async def test_user_state_equals_the_sum_of_the_weights_sent(worker, http):
    events = [
        {"user_id": "dana", "item_id": "x1", "action": "view"},
        {"user_id": "dana", "item_id": "x1", "action": "click"},
        {"user_id": "dana", "item_id": "x2", "action": "purchase"},
        {"user_id": "dana", "item_id": "x2", "action": "view"},
        {"user_id": "dana", "item_id": "x3", "action": "share"},
    ]
    assert (await post_json(http, f"{worker.url}/events", {"events": events}))[0] == 202

    async def all_counted():
        status, body = await get_json(http, f"{worker.url}/users/dana")
        return body if status == 200 and body["event_count"] == 5 else None

    state = await eventually(all_counted, within=10)
    weights = {item: entry["weight"] for item, entry in state["interactions"].items()}
    assert weights == pytest.approx({"x1": 1.5, "x2": 2.5, "x3": 0.1})
    assert state["interactions"]["x1"]["count"] == 2


async def test_messages_with_a_missing_or_foreign_key_are_re_keyed_and_counted_once(worker, http):
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP)
    await producer.start()
    try:
        for key, item in [(None, "k1"), (b"somebody-else", "k2"), (b"carol", "k3")]:
            value = json.dumps({"user_id": "carol", "item_id": item, "action": "click"}).encode()
            await producer.send_and_wait(worker.topic, value, key=key)
    finally:
        await producer.stop()

    async def all_counted():
        status, body = await get_json(http, f"{worker.url}/users/carol")
        return body if status == 200 and body["event_count"] >= 3 else None

    state = await eventually(all_counted, within=10)
    assert state["event_count"] == 3
    assert {item: e["weight"] for item, e in state["interactions"].items()} == {
        "k1": 1.0,
        "k2": 1.0,
        "k3": 1.0,
    }


async def test_an_invalid_request_gets_400_naming_the_problem_and_writes_nothing(worker, http):
    batch = {
        "events": [
            {"user_id": "erin", "item_id": "y1", "action": "view"},
            {"user_id": "erin", "item_id": "y2", "action": "view", "timestamp": "soon"},
        ]
    }
    status, body = await post_json(http, f"{worker.url}/events", batch)
    assert status == 400
    assert body["index"] == 1 and body["field"] == "timestamp"
    assert "ISO-8601" in body["problem"]

    # A later valid event of the same user is counted alone: the refused batch wrote nothing.
    marker = {"user_id": "erin", "item_id": "y3", "action": "click"}
    assert (await post_json(http, f"{worker.url}/events", marker))[0] == 202

    async def marker_counted():
        status, body = await get_json(http, f"{worker.url}/users/erin")
        return body if status == 200 else None

    state = await eventually(marker_counted, within=10)
    assert state["event_count"] == 1
    assert set(state["interactions"]) == {"y3"}


async def test_a_malformed_kafka_message_is_dead_lettered_and_the_stream_goes_on(worker, http):
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP)
    await producer.start()
    try:
        await producer.send_and_wait(worker.topic, b"{broken", key=b"fred")
        valid = {"user_id": "fred", "item_id": "z1", "action": "purchase"}
        await producer.send_and_wait(worker.topic, json.dumps(valid).encode(), key=b"fred")
    finally:
        await producer.stop()

    async def counted():
        status, body = await get_json(http, f"{worker.url}/users/fred")
        return body if status == 200 else None

    assert (await eventually(counted, within=10))["event_count"] == 1

    consumer = AIOKafkaConsumer(
        worker.dead_letter_topic, bootstrap_servers=KAFKA_BOOTSTRAP, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    letters = [record for records in batches.values() for record in records]
    assert [record.value for record in letters] == [b"{broken"]
    headers = dict(letters[0].headers)
    assert b"is not JSON" in headers["x-recsys-error"]


async def test_an_unknown_user_gets_popular_items(worker, http, trained):
    status, body = await get_json(http, f"{worker.url}/recommend/nobody-yet?n=3")
    assert status == 200
    assert body["source"] == "popular"
    assert len(body["items"]) == 3
    scores = [entry["score"] for entry in body["items"]]
    assert scores == sorted(scores, reverse=True)


async def test_health_reports_ready_with_the_current_model(worker, http, trained):
    status, body = await get_json(http, f"{worker.url}/health")
    assert status == 200
    assert body["status"] == "ready" and body["model_version"] is not None


@pytest.mark.parametrize("count", ["²", "٣", "-1", "0", "101", "ten", ""])
async def test_a_count_that_is_not_a_whole_number_in_range_gets_400(worker, http, count):
    status, body = await get_json(http, f"{worker.url}/recommend/anyone?n={count}")
    assert status == 400
    assert body["error"] == "n: must be a whole number from 1 to 100"


async def as_session_and_as_user(http, url: str, user: str, n: int) -> tuple[dict, dict, dict]:
    """The user's state, and their list both as a session of their actions (``POST
    /recommend``, which hides nothing) and as cached for them, once both come from one model
    (new-item folds publish a model version every second here) and the cached one reflects
    every event. Seed users only purchase."""

    async def on_one_model():
        _, state = await get_json(http, f"{url}/users/{user}")
        session = {
            "items": [
                {"item_id": item, "action": "purchase"}
                for item, entry in state["interactions"].items()
                for _ in range(entry["count"])
            ]
        }
        status, listed = await post_json(http, f"{url}/recommend?n={n}", session)
        assert status == 200, listed
        _, served = await get_json(http, f"{url}/recommend/{user}?n={n}")
        same = listed["model_version"] == served["model_version"]
        current = served["event_count"] == state["event_count"]
        return (state, listed, served) if same and current else None

    return await eventually(on_one_model, within=20, interval=0.1)


def ids(body: dict) -> list[str]:
    return [entry["item_id"] for entry in body["items"]]


async def test_a_session_of_a_users_actions_gets_that_users_list_and_writes_nothing(
    worker, http, trained
):
    logged = await records_logged(worker)

    state, listed, served = await as_session_and_as_user(http, worker.url, "seed-b5", 5)

    assert (listed["source"], listed["event_count"]) == ("personal", state["event_count"])
    assert ids(listed) == ids(served)
    assert set(ids(listed)).isdisjoint(state["interactions"])
    assert await records_logged(worker) == logged


async def test_similar_users_share_the_users_taste_and_leave_the_user_out(worker, http, trained):
    async def neighbours():
        status, body = await get_json(http, f"{worker.url}/users/seed-b2/similar?n=5")
        return body if status == 200 else None

    body = await eventually(neighbours, within=20, interval=0.2)

    found = [entry["user_id"] for entry in body["users"]]
    assert len(found) == 5 and "seed-b2" not in found
    assert all(user.startswith("seed-b") for user in found), found
    scores = [entry["score"] for entry in body["users"]]
    assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0 + 1e-6


async def test_similar_users_of_somebody_unknown_is_404_naming_them(worker, http):
    status, body = await get_json(http, f"{worker.url}/users/nobody-at-all/similar")
    assert (status, body["error"]) == (404, "user 'nobody-at-all' has no events")


async def test_a_hidden_item_leaves_the_users_list_until_shown_again(worker, http, trained):
    user = "seed-b7"
    _, unhidden, _ = await as_session_and_as_user(http, worker.url, user, 5)
    top = ids(unhidden)[0]

    status, _ = await post_json(http, f"{worker.url}/users/{user}/hidden", {"items": [top]})
    assert status == 202

    async def hidden_and_relisted():
        state, listed, served = await as_session_and_as_user(http, worker.url, user, 6)
        expected = [item for item in ids(listed) if item != top]
        done = state["hidden"] == [top] and top not in ids(served)
        return (expected[:5], ids(served)[:5]) if done else None

    expected, shown = await eventually(hidden_and_relisted, within=10)
    assert shown == expected

    async with http.delete(f"{worker.url}/users/{user}/hidden/{top}") as response:
        assert response.status == 202

    async def shown_again():
        state, listed, served = await as_session_and_as_user(http, worker.url, user, 5)
        relisted = not state["hidden"] and top in ids(served)
        return (ids(listed), ids(served)) if relisted else None

    expected, shown = await eventually(shown_again, within=10)
    assert shown == expected
