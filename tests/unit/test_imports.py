"""Importing ``app`` connects nowhere and builds nothing; only ``create_app`` wires a worker, and
even it opens no socket (redis-py connects on first use, Faust when the worker starts)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import faust
import pytest

from app.factory import create_app
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = {
    "RECSYS_KAFKA_BROKER": "kafka://127.0.0.1:1",
    "RECSYS_REDIS_URL": "redis://127.0.0.1:1/0",
}

PROBE = r"""
import asyncio, gc, importlib, json, pkgutil, socket, sys

connects = []

def refusing(name, original):
    def refuse(*args, **kwargs):
        connects.append(f"{name}{args!r}")
        raise ConnectionRefusedError(f"{name} during import")
    return refuse

for cls, name in [(socket.socket, "connect"), (socket.socket, "connect_ex")]:
    setattr(cls, name, refusing(f"socket.socket.{name}", getattr(cls, name)))
socket.create_connection = refusing("socket.create_connection", socket.create_connection)

async def create_connection(self, *args, **kwargs):
    connects.append(f"loop.create_connection{args!r}")
    raise ConnectionRefusedError("loop.create_connection during import")

asyncio.base_events.BaseEventLoop.create_connection = create_connection

import faust
import redis.asyncio

faust_apps = []
original_init = faust.App.__init__

def recording_init(self, *args, **kwargs):
    faust_apps.append(repr(args[:1]))
    original_init(self, *args, **kwargs)

faust.App.__init__ = recording_init

import app

imported, failed = [], {}
def on_error(name):
    failed[name] = repr(sys.exc_info()[1])

for module in pkgutil.walk_packages(app.__path__, "app.", onerror=on_error):
    if module.name == "app.__main__":  # importing it runs the command line
        continue
    try:
        importlib.import_module(module.name)
        imported.append(module.name)
    except BaseException as error:
        failed[module.name] = repr(error)

gc.collect()
print(json.dumps({
    "imported": imported,
    "failed": failed,
    "connects": connects,
    "faust_apps_built": faust_apps,
    "faust_apps_alive": sum(isinstance(o, faust.App) for o in gc.get_objects()),
    "redis_clients_alive": sum(isinstance(o, redis.asyncio.Redis) for o in gc.get_objects()),
}))
"""


def app_modules() -> list[str]:
    """Every module of the ``app`` package on disk, as a dotted name (but ``app.__main__``)."""
    names = set()
    for path in (REPO / "app").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names - {"app", "app.__main__"})


@pytest.fixture(scope="module")
def probe() -> dict:
    """What importing every module of ``app`` did, in a fresh interpreter."""
    env = {**os.environ, **UNREACHABLE, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_walk_reaches_every_module_of_app_and_its_subpackages(probe):
    assert sorted([*probe["imported"], *probe["failed"]]) == app_modules()
    assert {"app.stores.lists", "app.ops.metrics", "app.evaluation.streaming"} <= set(app_modules())


@pytest.mark.parametrize("module", app_modules())
def test_module_imports_in_a_fresh_interpreter(probe, module):
    assert probe["failed"].get(module) is None
    assert module in probe["imported"]


def test_importing_app_opens_no_socket(probe):
    assert probe["connects"] == []


def test_importing_app_builds_no_faust_app_and_no_redis_client(probe):
    assert probe["faust_apps_built"] == []
    assert probe["faust_apps_alive"] == 0
    assert probe["redis_clients_alive"] == 0


def test_create_app_wires_a_worker_without_opening_a_socket(monkeypatch, tmp_path):
    connects: list[str] = []

    def refuse(*args, **kwargs):
        connects.append(repr(args[1:]))
        raise ConnectionRefusedError("create_app must not connect")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    settings = Settings(
        app_id="unit-imports",
        kafka_broker=UNREACHABLE["RECSYS_KAFKA_BROKER"],
        redis_url=UNREACHABLE["RECSYS_REDIS_URL"],
        store="memory://",
        data_dir=str(tmp_path),
    )

    product = create_app(settings)

    assert connects == []
    assert isinstance(product.faust, faust.App)
    assert sorted(product.faust.agents) == [
        "app.agents.process_user_actions",
        "app.agents.store_items",
    ]
    assert product.topics.user_actions.get_topic_name() == settings.events_topic
    product.refresher.close()
