"""The product against a broker of the test's own whose only listener for clients is SASL_SSL
(SCRAM-SHA-512, with a CA and credentials made by ``harness.secure_kafka``): each kind of Kafka
client of the product connects with the configured credentials (the stream and the HTTP
producer, the trainer's changelog reader, consumer lag, dump, replay, topic creation), and
clients without them are refused."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError

from app import kafka_clients
from app.settings import Settings
from app.tables import changelog_topic
from harness.commands import run_app
from harness.data import seed_history
from harness.http import eventually, get_json, lag_by_partition, post_json
from harness.secure_kafka import SecureBroker, sasl_ssl_broker
from harness.worker import WorkerProcess, running_worker, worker_env

TOPIC_CONFIG_SOURCE = 1
"""DescribeConfigs' ``config_source`` of a value set on the topic itself, not a default."""
NO_CREDENTIALS = {"RECSYS_KAFKA_USERNAME": "", "RECSYS_KAFKA_PASSWORD": ""}
NO_TLS = {"RECSYS_KAFKA_SSL_CAFILE": ""}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    secure = sasl_ssl_broker(tmp_path_factory.mktemp("secure-kafka"))
    secure.broker.start()
    try:
        yield secure
    finally:
        secure.broker.stop()


@pytest.fixture(scope="module")
def worker(
    secure: SecureBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    folder = tmp_path_factory.mktemp("secure-worker")
    env = worker_env(folder, **secure.client_env())
    with running_worker(env, folder / "worker.log") as started:
        yield started


@pytest.fixture(scope="module")
async def trained(worker, http) -> dict:
    """The seed history posted and a model fitted on it (the trainer read the changelog): the
    list of user ``seed-a0``, personal."""
    assert (await post_json(http, f"{worker.url}/events", {"events": seed_history()}))[0] == 202

    async def personal():
        _, body = await get_json(http, f"{worker.url}/recommend/seed-a0?n=5")
        return body if body["source"] == "personal" and body["event_count"] == 6 else None

    return await eventually(personal, within=60, interval=0.2)


def settings_with(env: dict[str, str], **changes: str) -> Settings:
    """Settings from ``env`` with ``RECSYS_`` variables changed, or removed by an empty value."""
    merged = {name: value for name, value in {**env, **changes}.items() if value != ""}
    return Settings.from_env(merged)


async def test_an_event_posted_over_http_changes_the_users_list(worker, http, trained):
    clicked = trained["items"][0]["item_id"]
    event = {"user_id": "seed-a0", "item_id": clicked, "action": "click"}
    assert (await post_json(http, f"{worker.url}/events", event))[0] == 202

    async def changed():
        _, body = await get_json(http, f"{worker.url}/recommend/seed-a0?n=5")
        ids = [entry["item_id"] for entry in body["items"]]
        return body if body["event_count"] == 7 and clicked not in ids else None

    await eventually(changed, within=10, interval=0.1)


async def test_the_worker_measures_its_consumer_lag_down_to_zero(worker, http, trained):
    every_partition = {str(p) for p in range(int(worker.env["RECSYS_PARTITIONS"]))}

    async def caught_up():
        lag = await lag_by_partition(http, worker.url, worker.topic)
        return lag if set(lag) == every_partition and not any(lag.values()) else None

    await eventually(caught_up, within=30, interval=0.5)


def test_dump_reads_every_users_state_from_the_changelog(worker, trained, tmp_path: Path):
    done = run_app(["dump", str(tmp_path / "dump")], worker.env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    users = (tmp_path / "dump" / "states.jsonl").read_text().splitlines()
    assert len(users) == len({event["user_id"] for event in seed_history()})


def test_replay_finds_the_running_worker_in_its_consumer_group(worker):
    done = run_app(["replay"], worker.env, timeout=120)
    assert done.returncode != 0
    assert "1 worker(s) still in consumer group" in done.stderr


async def test_every_topic_has_the_configured_replication_factor_and_min_insync_replicas(worker):
    settings = settings_with(worker.env)
    topics = [
        settings.events_topic,
        settings.dead_letter_topic,
        settings.items_topic,
        changelog_topic(settings),
    ]
    assignor = f"{settings.app_id}-__assignor-__leader"  # holds no records: no min ISR of its own
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics([*topics, assignor])
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        )
    finally:
        await admin.close()
    replicas = {
        topic["topic"]: {len(partition["replicas"]) for partition in topic["partitions"]}
        for topic in described
    }
    assert replicas == {topic: {settings.topic_replication_factor} for topic in [*topics, assignor]}
    min_insync = {
        name: next(
            (value, source) for key, value, _, source, *_ in entries if key == "min.insync.replicas"
        )
        for _, _, _, name, entries in response.resources
    }
    wanted = (str(settings.topic_min_insync_replicas), TOPIC_CONFIG_SOURCE)
    assert min_insync == {topic: wanted for topic in topics}


@pytest.mark.parametrize(
    ("change", "logged"),
    [
        pytest.param(
            {**NO_CREDENTIALS, **NO_TLS, "RECSYS_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
            "closed",
            id="neither-tls-nor-credentials",
        ),
        pytest.param(
            {**NO_CREDENTIALS, "RECSYS_KAFKA_SECURITY_PROTOCOL": "SSL"}, "closed", id="tls-only"
        ),
        pytest.param(
            {"RECSYS_KAFKA_PASSWORD": "not-the-password"},
            "SaslAuthenticationFailed",
            id="wrong-password",
        ),
    ],
)
async def test_a_client_without_the_credentials_can_neither_produce_nor_read(
    secure, caplog, change, logged
):
    settings = settings_with(secure.client_env(), **change)
    settings.validate()
    producer = AIOKafkaProducer(**kafka_clients.client_options(settings))
    consumer = kafka_clients.consumer(settings)
    with caplog.at_level(logging.WARNING, logger="aiokafka"):
        for client in (producer, consumer):
            with pytest.raises(KafkaConnectionError):
                await client.start()
            await client.stop()
    assert logged in caplog.text
