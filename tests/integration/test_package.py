"""The wheel is the product: built from this tree, installed in a clean virtualenv, it starts a
worker that serves the demo page, with nothing read from the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import aiohttp
import pytest

from harness import ROOT
from harness.worker import running_worker, worker_env

BUILD_TIMEOUT = 300
SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE")


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory) -> Path:
    """A virtualenv holding only the wheel; the dependencies come from this environment's
    site-packages through a ``.pth`` line (its own ``.pth`` files, the source tree's editable
    install among them, are not read that way)."""
    folder = tmp_path_factory.mktemp("package")
    source = folder / "source"  # setuptools writes build/ where it builds: not in the tree
    shutil.copytree(ROOT / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for name in SOURCE_FILES:
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", folder / "dist", source],
        check=True,
        timeout=BUILD_TIMEOUT,
    )
    (wheel,) = (folder / "dist").glob("recsys_realtime-*.whl")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=BUILD_TIMEOUT)
    python = venv / "bin" / "python"
    install = [python, "-m", "pip", "install", "--no-deps", "-q", wheel]
    subprocess.run(install, check=True, timeout=BUILD_TIMEOUT)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_the_installed_package_is_imported_from_the_virtualenv_not_the_tree(
    installed_python, tmp_path
):
    where = subprocess.run(
        [installed_python, "-c", "import app; print(app.__file__)"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    assert Path(where).is_relative_to(installed_python.parent.parent)


async def test_a_worker_from_the_installed_wheel_serves_the_demo_page(installed_python, tmp_path):
    env = worker_env(tmp_path, RECSYS_RUN_TRAINER="false")
    with running_worker(env, tmp_path / "worker.log", str(installed_python), tmp_path) as worker:
        async with aiohttp.ClientSession() as http, http.get(f"{worker.url}/") as response:
            status, page = response.status, await response.text()

    assert status == 200
    assert "<html" in page.lower()
