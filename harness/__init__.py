"""Test and benchmark support: one launcher of worker processes under names of their own, the
Kafka and Redis servers that drills break, ground truth to check a stream against, and small
HTTP helpers.

Tests and benchmarks share it, so nothing here imports pytest: a failure raises an exception
that carries what is needed to understand it (a worker's log tail, a command's output).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the working directory of every ``python -m app`` the harness runs."""
