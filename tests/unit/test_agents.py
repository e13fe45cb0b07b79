"""The ``process_user_actions`` agent in process, through Faust's ``agent.test_context()``:
apply, skip re-deliveries, re-key and dead-letter, with no Kafka and no Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import types
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import pytest_asyncio
from faust.streams import current_event
from faust.types import TP, ChannelT, EventT
from faust.types.tuples import ConsumerMessage
from prometheus_client import REGISTRY

from app import agents
from app.agents import ERROR_HEADER, ORIGIN_HEADER, EventProcessor
from app.factory import Product, create_app
from app.models import UserAction, UserState, empty_state
from app.refresher import history
from app.settings import Settings
from app.state_codec import event_id_hash
from app.topics import ERASE_HEADER, HIDE_HEADER, RESTORE_HEADER, Topics, partition_for

USER = "u1"
KEY = USER.encode()
PARTITIONS = 8
HOME = partition_for(KEY, PARTITIONS)
AWAY = (HOME + 1) % PARTITIONS
WHEN = 1_700_000_000.0
AGENT = "app.agents.process_user_actions"
NO_ITEM = orjson.dumps({"user_id": USER, "action": "view", "timestamp": WHEN})


def action(**fields: Any) -> bytes:
    """A valid ``user-actions`` value for USER: a purchase of i1 (weight 2.0) unless changed."""
    return orjson.dumps(
        {"user_id": USER, "item_id": "i1", "action": "purchase", "timestamp": WHEN, **fields}
    )


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def drained(channel: ChannelT) -> list[EventT]:
    events = []
    while not channel.empty():
        events.append(channel.queue.get_nowait())
    return events


@dataclasses.dataclass
class Worker:
    """The product's agent on an in-memory channel, and what it sent and wrote."""

    product: Product
    agent: Any  # faust's AgentTestWrapper
    forwarded: ChannelT
    dead_letters: ChannelT
    changelog: list[tuple[bytes, UserState]]

    async def deliver(
        self,
        value: bytes | None,
        *,
        offset: int,
        key: bytes | None = KEY,
        partition: int = HOME,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Deliver one message of ``user-actions`` and wait until the agent's body is done
        with it (``put`` returns when the value is taken; the event is acked after the body)."""
        self.agent.sent_offset = offset  # the offset test_context gives the next message
        event = await self.agent.put(value, key=key, partition=partition, headers=headers)
        async with asyncio.timeout(2):
            while not event.message.acked:  # noqa: ASYNC110 - a flag Faust sets, no event
                await asyncio.sleep(0)

    @property
    def state(self) -> UserState | None:
        return self.product.user_state.get(KEY)

    async def deliver_batch(self, messages: list[tuple[Any, ...]]) -> None:
        """Deliver (key, value, offset, *headers) messages of their users' home partitions in one
        batch (the agent is built to take exactly this many) and wait until it was applied."""
        events = []
        for key, value, offset, *headers in messages:
            self.agent.sent_offset = offset
            partition = partition_for(key, PARTITIONS)
            events.append(
                await self.agent.put(value, key=key, partition=partition, headers=[*headers])
            )
        async with asyncio.timeout(2):
            while not all(event.message.acked for event in events):  # noqa: ASYNC110
                await asyncio.sleep(0)

    @property
    def touched(self) -> dict[str, UserState]:
        return dict(self.product.refresher.touched)


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a unit test opened a connection: {args!r}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@asynccontextmanager
async def agent_in_process(tmp_path, monkeypatch, **overrides: Any) -> AsyncIterator[Worker]:
    settings = Settings(
        app_id=f"unit-agents-{uuid.uuid4().hex[:8]}",
        kafka_broker="kafka://127.0.0.1:1",
        redis_url="redis://127.0.0.1:1/0",
        store="memory://",
        data_dir=str(tmp_path),
        partitions=PARTITIONS,
        **overrides,
    )
    product = create_app(settings)
    app = product.faust
    app.loop = asyncio.get_running_loop()
    app.finalize()
    # create_app has no seam for the topics: the processor would produce to Kafka. Rewire the
    # agents on in-memory channels (registering them again replaces them by name).
    topics = Topics(user_actions=app.channel(), dead_letters=app.channel(), items=app.channel())
    processor = EventProcessor(settings, topics, product.user_state, product.refresher)
    product = dataclasses.replace(product, topics=topics, processor=processor)
    agents.add_agents(product)

    changelog: list[tuple[bytes, UserState]] = []
    send_changelog = product.user_state.send_changelog

    def recorded(partition: int | None, key: bytes, value: UserState, *args: Any, **kwargs: Any):
        changelog.append((key, value))
        return send_changelog(partition, key, value, *args, **kwargs)

    monkeypatch.setattr(product.user_state, "send_changelog", recorded)
    forwarded = topics.user_actions.clone(is_iterator=True)
    dead_letters = topics.dead_letters.clone(is_iterator=True)
    async with app.agents[AGENT].test_context() as agent:
        yield Worker(product, agent, forwarded, dead_letters, changelog)
    product.refresher.close()


@pytest_asyncio.fixture
async def worker(tmp_path, monkeypatch) -> AsyncIterator[Worker]:
    async with agent_in_process(tmp_path, monkeypatch) as started:
        yield started


BATCH = 5


@pytest_asyncio.fixture
async def batching_worker(tmp_path, monkeypatch) -> AsyncIterator[Worker]:
    """An agent whose batches hold exactly BATCH messages (it never gives up waiting)."""
    async with agent_in_process(tmp_path, monkeypatch, batch_events=BATCH, batch_wait=60) as w:
        yield w


async def test_a_valid_event_is_applied_to_its_users_state(worker):
    processed = metric("recsys_events_processed_total", action="purchase")

    await worker.deliver(action(), offset=5)

    expected = UserState(
        items={"i1": [2.0, 1, WHEN]}, event_count=1, last_event_at=WHEN, applied_offset=5
    )
    assert worker.state == expected
    assert worker.changelog == [(KEY, expected)]
    assert worker.touched == {USER: history(expected, impression_limit=0)}
    assert metric("recsys_events_processed_total", action="purchase") == processed + 1
    assert drained(worker.forwarded) == drained(worker.dead_letters) == []


async def test_a_redelivered_message_counts_once_but_is_written_again(worker):
    await worker.deliver(action(), offset=5)
    applied = worker.state
    skipped = metric("recsys_duplicates_skipped_total")

    await worker.deliver(action(), offset=5)  # read again after a crash before the commit

    assert worker.state == applied
    assert applied.event_count == 1 and applied.items == {"i1": [2.0, 1, WHEN]}
    assert worker.changelog == [(KEY, applied), (KEY, applied)]
    assert metric("recsys_duplicates_skipped_total") == skipped + 1


@pytest.mark.parametrize(
    ("key", "partition"),
    [(b"someone-else", HOME), (None, HOME), (KEY, AWAY)],
    ids=["foreign key", "no key", "wrong partition"],
)
async def test_a_misplaced_message_is_rekeyed_to_its_user(worker, key, partition):
    rekeyed = metric("recsys_events_rekeyed_total")

    await worker.deliver(action(), offset=7, key=key, partition=partition)

    [copy] = drained(worker.forwarded)
    assert (copy.key, copy.value) == (KEY, action())
    assert copy.headers == {ORIGIN_HEADER: f"{partition}:7".encode()}
    assert metric("recsys_events_rekeyed_total") == rekeyed + 1
    assert worker.state is None and worker.changelog == [] and worker.touched == {}


async def test_a_copy_rekeyed_again_keeps_the_first_origin(worker):
    await worker.deliver(action(), offset=7, partition=AWAY, headers=[(ORIGIN_HEADER, b"3:41")])

    [copy] = drained(worker.forwarded)
    assert copy.headers == {ORIGIN_HEADER: b"3:41"}


async def test_a_rekeyed_copy_delivered_twice_counts_once(worker):
    origin = [(ORIGIN_HEADER, b"3:41")]
    await worker.deliver(action(), offset=10, headers=origin)
    skipped = metric("recsys_duplicates_skipped_total")

    # The re-keying worker crashed after producing the copy and produced it again.
    await worker.deliver(action(), offset=11, headers=origin)

    assert worker.state == UserState(
        items={"i1": [2.0, 1, WHEN]},
        event_count=1,
        last_event_at=WHEN,
        applied_offset=10,
        forwarded_offsets={"3": 41},
    )
    assert metric("recsys_duplicates_skipped_total") == skipped + 1


@pytest.mark.parametrize(
    ("value", "headers", "field", "error"),
    [
        (b"{not json", None, "value", "value: is not JSON: "),
        (None, None, "value", "value: is empty (a tombstone)"),
        (NO_ITEM, None, "item_id", "item_id: is required"),
        (
            action(),
            [(ORIGIN_HEADER, b"three:41")],
            ORIGIN_HEADER,
            f"{ORIGIN_HEADER}: must be partition:offset, got b'three:41'",
        ),
    ],
    ids=["not JSON", "tombstone", "missing item_id", "bad origin header"],
)
async def test_a_malformed_message_goes_to_the_dead_letters(worker, value, headers, field, error):
    dead_lettered = metric("recsys_events_dead_lettered_total", field=field)

    await worker.deliver(value, offset=9, headers=headers)

    [letter] = drained(worker.dead_letters)
    assert (letter.key, letter.value) == (KEY, value)
    assert set(letter.headers) == {ERROR_HEADER, ORIGIN_HEADER}
    assert letter.headers[ERROR_HEADER].decode().startswith(error)
    assert letter.headers[ORIGIN_HEADER] == f"{HOME}:9".encode()
    assert metric("recsys_events_dead_lettered_total", field=field) == dead_lettered + 1
    assert worker.state is None and worker.changelog == [] and worker.touched == {}
    assert drained(worker.forwarded) == []


async def test_two_events_with_the_same_event_id_count_once(worker):
    await worker.deliver(action(event_id="e-1"), offset=3)
    skipped = metric("recsys_duplicates_skipped_total")

    await worker.deliver(action(event_id="e-1", item_id="i2"), offset=4)  # a client's retry

    assert worker.state == UserState(
        items={"i1": [2.0, 1, WHEN]},
        event_count=1,
        last_event_at=WHEN,
        applied_offset=3,
        recent_event_ids=[event_id_hash("e-1")],
    )
    assert metric("recsys_duplicates_skipped_total") == skipped + 1


async def test_a_batch_writes_each_users_state_once_with_all_its_events(batching_worker):
    other = b"u2"
    await batching_worker.deliver_batch(
        [
            (KEY, action(), 20),
            (other, orjson.dumps({"user_id": "u2", "item_id": "i9", "action": "view"}), 3),
            (KEY, action(item_id="i2", action="click"), 21),
            (KEY, action(), 22),
            (other, orjson.dumps({"user_id": "u2", "item_id": "i9", "action": "click"}), 4),
        ]
    )

    written = dict(batching_worker.changelog)
    assert [key for key, _ in batching_worker.changelog] == [KEY, other]
    assert written[KEY].items == {"i1": [4.0, 2, WHEN], "i2": [1.0, 1, WHEN]}
    assert (written[KEY].event_count, written[KEY].applied_offset) == (3, 22)
    assert written[other].items["i9"][:2] == [1.5, 2]
    assert written[other].applied_offset == 4
    assert batching_worker.product.user_state.get(other) == written[other]


async def test_a_batch_skips_the_redelivered_events_it_holds(batching_worker):
    await batching_worker.deliver_batch(
        [(KEY, action(), offset) for offset in (30, 31, 30, 31, 32)]
    )

    [(key, state)] = batching_worker.changelog
    assert key == KEY
    assert (state.event_count, state.applied_offset) == (3, 32)
    assert state.items == {"i1": [6.0, 3, WHEN]}


async def test_a_batch_folds_into_its_own_copy_and_leaves_the_state_the_table_held(worker):
    await worker.deliver(action(), offset=1)
    held = worker.state
    as_held = held.to_representation()

    await worker.deliver(action(item_id="i2", action="click", event_id="e-2"), offset=2)

    assert held.to_representation() == as_held
    assert worker.state is not held and worker.state.event_count == 2


async def test_a_batch_reads_each_users_state_in_that_users_partition(batching_worker, monkeypatch):
    """Faust's RocksDB store reads the partition of the current event: while a batch is
    applied the stream has moved on, so each read must make its own event current."""
    table = batching_worker.product.user_state
    read_in: list[tuple[bytes, int]] = []
    get = table.get

    def recorded(key: bytes, default: Any = None) -> Any:
        read_in.append((key, current_event().message.partition))
        return get(key, default)

    monkeypatch.setattr(table, "get", recorded)
    users = [f"user-{n}".encode() for n in range(BATCH)]
    await batching_worker.deliver_batch(
        [
            (key, orjson.dumps({"user_id": key.decode(), "item_id": "i1", "action": "view"}), n)
            for n, key in enumerate(users)
        ]
    )

    assert read_in == [(key, partition_for(key, PARTITIONS)) for key in users]
    assert len({partition for _, partition in read_in}) > 1


ERASURE = (ERASE_HEADER, b"1")


async def test_an_erasure_removes_the_users_state_and_held_history(worker):
    await worker.deliver(action(), offset=5)
    erased = metric("recsys_users_erased_total")

    await worker.deliver(b"{}", offset=6, headers=[ERASURE])

    assert worker.state is None
    assert worker.touched == {}
    assert metric("recsys_users_erased_total") == erased + 1


async def test_an_erasure_outside_the_users_partition_goes_to_the_dead_letters(worker):
    await worker.deliver(action(), offset=5)
    before = worker.state

    await worker.deliver(b"{}", offset=6, partition=AWAY, headers=[ERASURE])

    [letter] = drained(worker.dead_letters)
    assert letter.headers[ERROR_HEADER].decode() == (
        f"{ERASE_HEADER}: must be keyed by the user, in the user's partition"
    )
    assert worker.state == before


async def test_events_after_an_erasure_in_the_same_batch_start_the_user_afresh(batching_worker):
    await batching_worker.deliver_batch(
        [
            (KEY, action(), 30),
            (KEY, action(item_id="i2"), 31),
            (KEY, b"{}", 32, ERASURE),
            (KEY, action(item_id="i3", action="click"), 33),
            (b"u2", orjson.dumps({"user_id": "u2", "item_id": "i9", "action": "view"}), 4),
        ]
    )

    state = batching_worker.product.user_state.get(KEY)
    assert state.items == {"i3": [1.0, 1, WHEN]}
    assert (state.event_count, state.applied_offset) == (1, 33)


def hiding(*item_ids: str) -> bytes:
    return orjson.dumps({"user_id": USER, "item_ids": list(item_ids)})


HIDE, SHOW = (HIDE_HEADER, b"1"), (HIDE_HEADER, b"0")


async def test_a_hide_keeps_the_users_events_and_touches_them_to_rewrite_their_list(worker):
    await worker.deliver(action(), offset=5)

    await worker.deliver(hiding("i7", "i8"), offset=6, headers=[HIDE])

    assert worker.state.hidden == ["i7", "i8"]
    assert (worker.state.event_count, worker.state.applied_offset) == (1, 6)
    assert worker.touched[USER].hidden == {"i7", "i8"}


async def test_a_show_again_takes_the_item_out_of_the_hidden_ones(worker):
    await worker.deliver(hiding("i7", "i8"), offset=5, headers=[HIDE])

    await worker.deliver(hiding("i7"), offset=6, headers=[SHOW])

    assert worker.state.hidden == ["i8"]


@pytest.mark.parametrize(
    ("value", "partition", "error"),
    [
        (hiding("i7"), AWAY, f"{HIDE_HEADER}: must be keyed by the user, in the user's partition"),
        (orjson.dumps({"user_id": "other", "item_ids": ["i7"]}), HOME, "user_id: must be the user"),
        (orjson.dumps({"user_id": USER, "item_ids": []}), HOME, "must hold at least one item"),
    ],
    ids=["outside the user's partition", "for another user", "without items"],
)
async def test_a_bad_hide_goes_to_the_dead_letters_and_changes_nothing(
    worker, value, partition, error
):
    await worker.deliver(action(), offset=5)
    before = worker.state

    await worker.deliver(value, offset=6, partition=partition, headers=[HIDE])

    [letter] = drained(worker.dead_letters)
    assert error in letter.headers[ERROR_HEADER].decode()
    assert worker.state == before


RESTORE = (RESTORE_HEADER, b"1")


async def test_a_restore_message_replaces_the_users_state_as_of_its_offset(worker):
    await worker.deliver(action(item_id="old"), offset=5)
    dumped = empty_state().with_action(
        UserAction(USER, "i3", "click", WHEN), 1.0, offset=900, origin=None
    )

    await worker.deliver(dumped.dumps(), offset=6, headers=[RESTORE])

    assert worker.state.items == dumped.items and worker.state.applied_offset == 6
    assert worker.touched[USER].weights == {"i3": 1.0}


async def test_a_restore_message_that_is_no_state_goes_to_the_dead_letters(worker):
    await worker.deliver(action(), offset=5)
    before = worker.state

    await worker.deliver(b"\x07garbage", offset=6, headers=[RESTORE])

    [letter] = drained(worker.dead_letters)
    assert letter.headers[ERROR_HEADER].decode().startswith("value: is not an encoded user state")
    assert worker.state == before


def batch_at(*positions: tuple[int, int]) -> list[Any]:
    """Events of ``user-actions`` at these (partition, offset) positions."""
    return [
        types.SimpleNamespace(
            message=types.SimpleNamespace(tp=TP("user-actions", partition), offset=offset)
        )
        for partition, offset in positions
    ]


def test_the_records_waiting_are_those_after_each_partitions_last_event_of_the_batch():
    batch = batch_at((0, 10), (1, 4), (0, 11))
    highwaters = {TP("user-actions", 0): 15, TP("user-actions", 1): 6}

    assert agents.records_waiting(batch, highwaters.get) == 3 + 1


def test_nothing_is_waiting_at_the_highwater_or_before_a_partitions_first_fetch():
    batch = batch_at((0, 10), (1, 4), (0, 11), (2, 7))
    highwaters = {TP("user-actions", 0): 12, TP("user-actions", 1): 5}  # 2: never fetched

    assert agents.records_waiting(batch, highwaters.get) == 0


def test_a_failed_batchs_messages_are_never_acked_to_the_consumer_so_no_commit_passes_them():
    acked: list[int] = []
    consumer = types.SimpleNamespace(ack=lambda message: acked.append(message.offset) or True)
    messages = [
        ConsumerMessage("user-actions", 0, offset, 0.0, 0, None, b"u1", b"{}", None)
        for offset in (10, 11)
    ]

    agents.never_commit([types.SimpleNamespace(message=message) for message in messages])

    assert [message.ack(consumer) for message in messages] == [False, False]
    assert acked == []


def test_a_message_of_a_batch_that_was_applied_is_acked_to_the_consumer():
    acked: list[int] = []
    consumer = types.SimpleNamespace(ack=lambda message: acked.append(message.offset) or True)
    message = ConsumerMessage("user-actions", 0, 10, 0.0, 0, None, b"u1", b"{}", None)

    assert message.ack(consumer)
    assert acked == [10]


async def test_an_impression_counts_a_showing_re_ranks_the_user_and_counts_once(worker):
    await worker.deliver(action(), offset=5)
    processed = metric("recsys_events_processed_total", action="impression")

    await worker.deliver(action(item_id="i2", action="impression"), offset=6)
    await worker.deliver(action(item_id="i2", action="impression"), offset=6)  # re-delivered

    state = worker.state
    assert state.impressions == {"i2": 1}
    assert state.event_count == 1 and state.items == {"i1": [2.0, 1, WHEN]}
    assert worker.touched == {USER: history(state, worker.product.settings.impression_limit)}
    assert metric("recsys_events_processed_total", action="impression") == processed + 1


async def test_a_dislike_takes_a_purchased_item_out_of_the_users_positives(worker):
    await worker.deliver(action(), offset=5)
    await worker.deliver(action(), offset=6)

    await worker.deliver(action(action="dislike"), offset=7)

    assert worker.state.items == {"i1": [0.0, 3, WHEN]}
