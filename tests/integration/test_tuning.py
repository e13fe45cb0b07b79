"""``python -m app tune`` on the bundled sample, and a worker on the real Kafka and Redis that
fits with the settings it wrote."""

from __future__ import annotations

import asyncio
import re

from redis.asyncio import Redis

from app.datasets import event_json, read_events
from app.settings import Settings
from app.stores.keys import RedisKeys
from app.stores.model import ModelStore, decode_model
from harness import ROOT
from harness.commands import run_app
from harness.http import eventually
from harness.kafka import produce
from harness.services import REDIS_URL
from harness.worker import running_worker, worker_env

SAMPLE = ROOT / "data" / "sample-events.csv"
TRIAL_ROW = re.compile(r"^\| \d+ \| \d+ \|", re.MULTILINE)


def tune(env: dict[str, str], *arguments: str) -> tuple[str, str]:
    """Run ``tune`` on the sample, which must succeed; returns its stdout and stderr."""
    done = run_app(["tune", "--events", str(SAMPLE), *arguments], env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, done.stderr


async def published_params(redis: Redis, prefix: str) -> dict | None:
    """The ALS parameters of the model the trainer published (None before a full fit)."""
    models = ModelStore(redis, RedisKeys(prefix))
    version = await models.snapshot_version()
    blob = None if version is None else await models.load(version)
    return None if blob is None else decode_model(blob)[1]["params"]


def test_tune_prints_a_row_a_trial_with_progress_and_writes_the_settings_it_chose(tmp_path):
    out = tmp_path / "tuned.env"
    stdout, stderr = tune(worker_env(tmp_path), "--trials", "5", "--out", str(out))

    chosen = [line for line in stdout.splitlines() if line.startswith("RECSYS_ALS_")]
    written = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert len(TRIAL_ROW.findall(stdout)) == 5
    assert [line.split(" ")[0] for line in stderr.splitlines() if line.startswith("[")] == [
        f"[{trial}]" for trial in range(1, 6)
    ]
    assert "test, current (" in stdout and "test, best (" in stdout
    assert written == chosen and len(chosen) == 4


async def test_a_worker_given_the_tuned_env_file_fits_with_its_settings(tmp_path):
    env = worker_env(tmp_path)  # the current settings to beat: 8 factors, 10 iterations
    out = tmp_path / "tuned.env"
    await asyncio.to_thread(
        tune, env, "--factors", "16", "--regularization", "0.1", "--alpha", "5",
        "--iterations", "5", "--out", str(out),
    )  # fmt: skip
    tuned = Settings.from_env({"RECSYS_ENV_FILE": str(out)})
    worker_settings = {key: value for key, value in env.items() if not key.startswith("RECSYS_ALS")}
    worker_settings["RECSYS_ENV_FILE"] = str(out)

    with running_worker(worker_settings, tmp_path / "worker.log") as worker:
        await produce(worker.topic, [event_json(event) for event in read_events(SAMPLE)])
        redis = Redis.from_url(REDIS_URL)
        try:
            params = await eventually(
                lambda: published_params(redis, env["RECSYS_REDIS_PREFIX"]), within=90
            )
        finally:
            await redis.aclose()

    assert tuned.als_factors in (8, 16)  # the current settings, or the one point searched
    assert (params["factors"], params["regularization"], params["alpha"], params["iterations"]) == (
        tuned.als_factors,
        tuned.als_regularization,
        tuned.als_alpha,
        tuned.als_iterations,
    )
