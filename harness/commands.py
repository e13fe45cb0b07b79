"""The app's command line as a test or benchmark runs it: ``python -m app ...`` from the
repository root, with a worker's settings in its environment."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from harness import ROOT

TERMINAL_COLUMNS = 120


def run_app(
    arguments: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m app ...`` to its end and keep its stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "app", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_replay(env: dict[str, str], *arguments: str) -> str:
    """``python -m app replay``, which must succeed; returns what it printed."""
    done = run_app(["replay", *arguments], env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_in_terminal(
    arguments: list[str], env: dict[str, str], stdout: Path, timeout: float = 180
) -> tuple[int, str]:
    """Run ``python -m app ...`` with stderr on a pseudo-terminal, as someone at a terminal sees
    it, and stdout into a file. Returns the exit code and what the terminal showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, TERMINAL_COLUMNS, 0, 0))
    with open(stdout, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", *arguments],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=follower,
        )
    os.close(follower)
    shown = bytearray()
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command closed its end
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(timeout=timeout)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return code, shown.decode(errors="replace")
