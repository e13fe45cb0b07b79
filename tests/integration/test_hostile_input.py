"""Hostile input over HTTP and straight to Kafka, against a worker of this module's own.

A bad request gets a 4xx whose message names the problem and writes nothing; a malformed Kafka
message goes to the dead-letter topic with its reason and is counted; the worker keeps running.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from typing import Any
from urllib.parse import quote

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from yarl import URL

from harness.http import eventually, get_json, get_metric, post_json
from harness.kafka import records_logged
from harness.services import KAFKA_BOOTSTRAP, REDIS_URL
from harness.worker import WorkerProcess, running_worker, worker_env

BODY_READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> WorkerProcess:
    folder = tmp_path_factory.mktemp("hostile")
    env = worker_env(
        folder, RECSYS_RUN_TRAINER="false", RECSYS_BODY_READ_TIMEOUT=str(BODY_READ_TIMEOUT)
    )
    with running_worker(env, folder / "worker.log") as process:
        yield process


def event(**fields: Any) -> dict[str, Any]:
    return {"user_id": "mallory", "item_id": "i1", "action": "view", **fields}


def too_many(count: int) -> dict[str, Any]:
    return {"events": [event(item_id=f"i{n}") for n in range(count)]}


NOW = time.time()
REFUSED = [
    pytest.param(b'{"user_id": ', None, "not valid JSON", id="invalid JSON"),
    pytest.param(b"", None, "not valid JSON", id="empty body"),
    pytest.param([1, 2], "event", "must be a JSON object", id="not an object"),
    pytest.param(event(user_id=42), "user_id", "must be a string, got int", id="wrong type"),
    pytest.param(event(item_id=None), "item_id", "is required", id="missing field"),
    pytest.param(event(user_id="   "), "user_id", "must not be empty", id="blank id"),
    pytest.param(event(user_id="u" * 257), "user_id", "257 characters", id="very long id"),
    pytest.param(event(action="a" * 65), "action", "65 characters", id="very long action"),
    pytest.param(event(event_id="e" * 65), "event_id", "65 characters", id="very long event id"),
    pytest.param(event(user_id="a\x00b"), "user_id", "U+0000", id="NUL in id"),
    pytest.param(event(item_id="line\nbreak"), "item_id", "U+000A", id="newline in id"),
    pytest.param(event(user_id="del\x7f"), "user_id", "U+007F", id="DEL in id"),
    pytest.param(event(item_id="\u0378"), "item_id", "U+0378", id="unassigned code point"),
    pytest.param(
        b'{"user_id": "\\ud800", "item_id": "i", "action": "view"}',
        None,
        "not valid JSON",
        id="lone surrogate",
    ),
    pytest.param(event(timestamp=NOW + 10 * 86400), "timestamp", "in the future", id="future"),
    pytest.param(event(timestamp="1999-12-31T23:59:59Z"), "timestamp", "before 2000", id="past"),
    pytest.param(event(timestamp="NaN"), "timestamp", "not a finite number", id="NaN time"),
    pytest.param(event(timestamp=True), "timestamp", "got bool", id="boolean time"),
    pytest.param(event(timestamp="soon"), "timestamp", "not ISO-8601", id="words for time"),
    pytest.param(too_many(1001), "events", "1001 events, the maximum", id="batch over limit"),
    pytest.param({"events": []}, "events", "at least one event", id="empty batch"),
    pytest.param({"events": "all"}, "events", "must be a list", id="batch not a list"),
    pytest.param(
        {"events": [event(event_id="e1"), event(event_id="e1", item_id="i2")]},
        "event_id",
        "repeats the event_id of event 0",
        id="duplicate event in a batch",
    ),
    pytest.param(
        {"events": [event(), event(item_id="i2"), event(user_id=["x"])]},
        "user_id",
        "must be a string, got list",
        id="one bad event spoils the batch",
    ),
]


@pytest.mark.parametrize(("body", "field", "problem"), REFUSED)
async def test_a_bad_request_gets_400_naming_the_problem_and_writes_nothing(
    target, http, body, field, problem
):
    before = await records_logged(target)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(
        f"{target.url}/events", data=raw, headers={"content-type": "application/json"}
    ) as response:
        status, answer = response.status, await response.json()
    assert status == 400
    message = answer.get("problem", answer["error"])
    assert problem in message
    if field is not None:
        assert answer["field"] == field
    await asyncio.sleep(0.3)
    assert await records_logged(target) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["declared length", "chunked"])
async def test_a_body_over_the_limit_gets_413_and_writes_nothing(target, http, chunked):
    before = await records_logged(target)
    body = json.dumps(too_many(1000)).encode() + b" " * (1024 * 1024)

    async def chunks():
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    async with http.post(f"{target.url}/events", data=chunks() if chunked else body) as response:
        assert response.status == 413
        assert "larger than 1048576 bytes" in (await response.json())["error"]
    assert await records_logged(target) == before


async def test_a_client_too_slow_to_send_its_body_gets_408_while_others_are_served(target, http):
    with socket.create_connection(("127.0.0.1", int(target.env["RECSYS_WEB_PORT"]))) as slow:
        slow.sendall(
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n" + b'{"user_id": "sl'
        )
        status, _ = await get_json(http, f"{target.url}/popular")
        assert status == 200, "a slow client must not hold up the others"
        slow.settimeout(BODY_READ_TIMEOUT + 5)
        answer = await asyncio.to_thread(slow.recv, 4096)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"not received within 1 s" in answer


async def test_a_client_that_never_finishes_its_headers_holds_up_nobody(target, http):
    with socket.create_connection(("127.0.0.1", int(target.env["RECSYS_WEB_PORT"]))) as slow:
        slow.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Le")
        for _ in range(5):
            status, _ = await get_json(http, f"{target.url}/recommend/anyone")
            assert status == 200


UNUSUAL_IDS = [
    "ユーザー",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # family emoji joined by ZWJ
    "e\u0301",  # e + combining acute (NFD)
    "\u00e9",  # precomposed é (NFC): a different id, ids are not normalised
    "with spaces",
    "a/b?c#d%20",
    "\u202eright-to-left",
    "x:y*z[1]",
    "..",
]


async def test_unusual_unicode_ids_are_kept_exactly_and_their_redis_keys_stay_namespaced(
    target, http
):
    events = [
        {"user_id": user, "item_id": f"item-{user}", "action": "view"} for user in UNUSUAL_IDS
    ]
    async with http.post(f"{target.url}/events", json={"events": events}) as response:
        assert response.status == 202

    async def every_state_exact():
        for user in UNUSUAL_IDS:
            url = URL(f"{target.url}/users/{quote(user, safe='')}", encoded=True)
            async with http.get(url) as response:
                if response.status != 200:
                    return None
                body = await response.json()
            assert body["user_id"] == user
            assert list(body["interactions"]) == [f"item-{user}"]
        return True

    await eventually(every_state_exact, within=10, interval=0.2)
    prefix = target.redis_prefix
    redis = Redis.from_url(REDIS_URL)
    try:
        lists = {f"{prefix}:rec:{user}".encode() for user in UNUSUAL_IDS}

        async def every_list_cached():
            return all(await asyncio.gather(*(redis.exists(key) for key in lists))) or None

        await eventually(every_list_cached, within=10, interval=0.2)
        keys = {key async for key in redis.scan_iter(match=f"{prefix}:*")}
    finally:
        await redis.aclose()
    others = {key for key in keys if key.startswith(f"{prefix}:rec:".encode())} - lists
    assert all(b"\x00" not in key and b"\n" not in key for key in others)


async def test_malformed_kafka_messages_are_dead_lettered_with_the_reason_and_counted(target, http):
    malformed = [
        (b"{broken", [], "value: is not JSON"),
        (b"\xff\xfe\x00", [], "value: is not JSON"),
        (None, [], "value: is empty"),
        (b"[1, 2]", [], "event: must be a JSON object"),
        (json.dumps(event(user_id=7)).encode(), [], "user_id: must be a string"),
        (json.dumps(event(user_id="a\x00b")).encode(), [], "user_id: has a control"),
        (json.dumps(event(user_id="u" * 300)).encode(), [], "user_id: is 300 characters"),
        (json.dumps(event()).encode(), [("x-recsys-origin", b"junk")], "x-recsys-origin:"),
    ]
    dead_lettered = "recsys_events_dead_lettered_total"
    counted_before = await get_metric(http, target.url, dead_lettered)
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP)
    await producer.start()
    try:
        for value, headers, _ in malformed:
            await producer.send_and_wait(target.topic, value, key=b"mallory", headers=headers)
        valid = event(user_id="after-the-storm", item_id="z1", action="purchase")
        await producer.send_and_wait(
            target.topic, json.dumps(valid).encode(), key=b"after-the-storm"
        )
    finally:
        await producer.stop()

    async def applied():
        status, body = await get_json(http, f"{target.url}/users/after-the-storm")
        return body if status == 200 else None

    assert (await eventually(applied, within=10))["event_count"] == 1
    counted = await get_metric(http, target.url, dead_lettered)
    assert counted - counted_before == len(malformed)

    consumer = AIOKafkaConsumer(
        target.dead_letter_topic, bootstrap_servers=KAFKA_BOOTSTRAP, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        letters = []
        deadline = time.monotonic() + 10
        while len(letters) < len(malformed) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            letters += [record for records in batches.values() for record in records]
    finally:
        await consumer.stop()
    reasons = sorted(dict(letter.headers)["x-recsys-error"].decode() for letter in letters)
    assert len(reasons) == len(malformed)
    for _, _, reason in malformed:
        assert any(got.startswith(reason) for got in reasons), (reason, reasons)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
FIELD_VALUES = (
    st.text(max_size=300)
    | st.integers()
    | st.floats()
    | st.none()
    | st.booleans()
    | st.lists(st.text(max_size=5), max_size=2)
)
EVENTS = st.fixed_dictionaries(
    {},
    optional={
        name: FIELD_VALUES for name in ("user_id", "item_id", "action", "timestamp", "event_id")
    },
)
BODIES = (
    EVENTS.map(lambda e: json.dumps(e).encode())
    | st.lists(EVENTS, max_size=5).map(lambda es: json.dumps({"events": es}).encode())
    | JSON_VALUES.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=200)
)
READS = st.tuples(
    st.sampled_from(["/recommend/", "/users/", "/similar/", "/popular", "/health", "/metrics"]),
    st.text(max_size=300),
    st.text(max_size=10),
    st.text(max_size=10),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, read=READS)
def test_no_generated_request_gets_a_5xx(target, body, read):
    connection = http.client.HTTPConnection("127.0.0.1", int(target.env["RECSYS_WEB_PORT"]))
    try:
        connection.request(
            "POST", "/events", body=body, headers={"content-type": "application/json"}
        )
        posted = connection.getresponse()
        answer = posted.read()
        assert posted.status in (202, 400), (body, posted.status, answer)
        if posted.status == 400:
            assert "error" in json.loads(answer)
        path, name, n, half_life = read
        url = path + (quote(name, safe="") if path.endswith("/") else "")
        url += f"?n={quote(n, safe='')}&half_life={quote(half_life, safe='')}"
        connection.request("GET", url)
        got = connection.getresponse()
        got.read()
        assert got.status < 500, (url, got.status)
    finally:
        connection.close()


async def test_made_up_actions_and_user_ids_add_no_metric_series(target, http):
    made_up = [event(user_id=f"visitor-{n}", action=f"made-up-{n}") for n in range(30)]
    before = await get_metric(http, target.url, "recsys_events_processed_total", action="other")

    status, _ = await post_json(http, f"{target.url}/events", {"events": made_up})
    for n in range(30):
        await get_json(http, f"{target.url}/recommend/visitor-{n}")

    assert status == 202

    async def all_counted_as_other() -> bool | None:
        processed = await get_metric(
            http, target.url, "recsys_events_processed_total", action="other"
        )
        return True if processed >= before + len(made_up) else None

    await eventually(all_counted_as_other, within=10)
    async with http.get(f"{target.url}/metrics") as response:
        exposition = await response.text()
    assert "made-up-" not in exposition
    assert "visitor-" not in exposition
