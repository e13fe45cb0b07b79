"""Faust's own environment variables against a real worker: the product's settings win."""

from __future__ import annotations

import socket

from harness.http import post_json
from harness.services import free_port
from harness.worker import running_worker, worker_env


async def test_a_worker_ignores_fausts_web_port_broker_and_acks_variables(tmp_path, http):
    decoy_port = free_port()
    env = worker_env(
        tmp_path,
        RECSYS_RUN_TRAINER="false",
        WEB_PORT=str(decoy_port),
        BROKER_URL="kafka://127.0.0.1:1",
        PRODUCER_ACKS="1",
    )
    with running_worker(env, tmp_path / "worker.log") as worker:  # ready on RECSYS_WEB_PORT
        status, _ = await post_json(
            http, f"{worker.url}/events", {"user_id": "u1", "item_id": "i1", "action": "view"}
        )
        with socket.socket() as probe:
            decoy_answers = probe.connect_ex(("127.0.0.1", decoy_port)) == 0

    assert status == 202, "acknowledged by the product's broker, not BROKER_URL's"
    assert not decoy_answers
