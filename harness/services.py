"""The Kafka broker and Redis server a worker runs against: the shared ones that ``make test``
starts, and servers of a drill's own on free ports, which it may stop, kill or restart."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from redis.asyncio import Redis

from app.settings import Settings
from app.stores.keys import RedisKeys
from harness import ROOT

KAFKA_BOOTSTRAP = os.environ.get("TEST_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class ServiceFailed(RuntimeError):
    """Kafka or Redis is not there, or a server of the drill's own did not come up."""


def free_port() -> int:
    """A TCP port nothing listens on now, for a worker's web server or a drill's own server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(host: str, port: int) -> bool:
    """Whether something accepts connections there."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def require_services(env: dict[str, str]) -> None:
    """Fail at once, with what to do, when the broker or Redis a worker would use is down,
    rather than after the worker's two minutes of retries."""
    settings = Settings.from_env(env)
    kafka_host, kafka_port = settings.bootstrap_servers.split(",")[0].rsplit(":", 1)
    redis = urlsplit(settings.redis_url)
    wanted = [(kafka_host, int(kafka_port)), (redis.hostname or "127.0.0.1", redis.port or 6379)]
    down = [f"{host}:{port}" for host, port in wanted if not listening(host, port)]
    if down:
        raise ServiceFailed(
            f"nothing listens on {', '.join(down)}: Kafka and Redis must run (`make up` or "
            "`make test` starts them)"
        )


class KafkaBroker:
    """A broker of the test's own, on free ports, run by scripts/services.sh: ``overlay`` lines
    replace lines of infra/kafka/server.properties (other listeners, say), ``format_args`` go to
    its first storage format (SCRAM credentials, say). With ``nodes=3``, a cluster of three
    KRaft nodes (each a broker and a controller voter, node ids 1 to 3) with the script's
    cluster settings: replication factor 3, min ISR 2."""

    def __init__(
        self, folder: Path, overlay: str = "", format_args: Sequence[str] = (), nodes: int = 1
    ) -> None:
        self.folder = folder
        self.ports = [free_port() for _ in range(nodes)]
        self.env = {
            **os.environ,
            "DATA_DIR": str(folder),
            "KAFKA_PORT": ",".join(map(str, self.ports)),
            "KAFKA_CONTROLLER_PORT": ",".join(str(free_port()) for _ in range(nodes)),
            "KAFKA_HEAP": "-Xmx384m -Xms128m",
            "KAFKA_FORMAT_ARGS": " ".join(format_args),
        }
        if overlay:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "overlay.properties").write_text(overlay)
            self.env["KAFKA_CONFIG_OVERLAY"] = str(folder / "overlay.properties")
        resolved = ROOT / ".data" / "kafka" / "classpath.txt"
        if resolved.exists():  # skip Maven: the shared broker's jars are the same
            (folder / "kafka").mkdir(parents=True, exist_ok=True)
            shutil.copy(resolved, folder / "kafka" / "classpath.txt")

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated, as clients take it."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @property
    def nodes(self) -> range:
        """The node ids, which are also the broker ids in the cluster's metadata."""
        return range(1, len(self.ports) + 1)

    def _target(self, node: int | None) -> str:
        return "kafka" if node is None else f"kafka-{node}"

    def _services(self, action: str, node: int | None = None) -> None:
        target = self._target(node)
        done = subprocess.run(
            [str(ROOT / "scripts" / "services.sh"), action, target],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise ServiceFailed(
                f"services.sh {action} {target} failed:\n{done.stdout}{done.stderr}"
            )

    def start(self, node: int | None = None) -> None:
        """Start every node (they wait for each other's quorum), or only node ``node``."""
        self._services("start", node)

    def stop(self, node: int | None = None) -> None:
        """Stop every node, or only node ``node``, the way a deployment does (SIGTERM)."""
        self._services("stop", node)

    def kill(self, node: int) -> None:
        """kill -9 node ``node`` of a cluster: no controlled shutdown, nothing flushed."""
        pid = int((self.folder / "run" / f"{self._target(node)}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while listening("127.0.0.1", self.ports[node - 1]):
            if time.monotonic() > deadline:
                raise ServiceFailed(f"kafka node {node} (pid {pid}) still listens after SIGKILL")
            time.sleep(0.05)


class RedisServer:
    """A Redis of the drill's own without persistence: a restart comes back empty."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it on its port (the same one after a kill) and return once it listens."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                *("--bind", "127.0.0.1", "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--dir", str(self.folder)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if listening("127.0.0.1", self.port):
                return
            time.sleep(0.05)
        raise ServiceFailed(f"redis-server did not listen on {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.asynccontextmanager
async def scratch_redis() -> AsyncIterator[tuple[Redis, RedisKeys]]:
    """A connection to the shared Redis and keys under a prefix of the test's own, every one of
    which is deleted afterwards: for testing one store against the real server."""
    redis = Redis.from_url(REDIS_URL)
    keys = RedisKeys(f"test:{uuid.uuid4().hex}")
    try:
        yield redis, keys
    finally:
        stored = [key async for key in redis.scan_iter(match=keys.every_key, count=1000)]
        if stored:
            await redis.delete(*stored)
        await redis.aclose()
