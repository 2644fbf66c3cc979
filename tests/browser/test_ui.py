"""The Dagster UI shows the journeys asset graph: a real dagster-webserver, read by headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, copy_project

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
WEBSERVER = Path(sys.executable).with_name("dagster-webserver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Terminate the process group we started (the webserver and its code server)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def chromium(tmp_path: Path, *args: str) -> str:
    """One headless Chromium invocation with a fresh profile; its stdout."""
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--window-size=1920,1200", "--virtual-time-budget=30000", *args]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        return process.communicate(timeout=120)[0]
    finally:
        stop(process)


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"dagster-webserver did not start in {seconds:.0f} s"
        time.sleep(0.5)


@pytest.fixture
def webserver(tmp_path):
    """dagster-webserver on a free localhost port, DAGSTER_HOME in tmp, the project a copy of the repo's."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    project = copy_project(tmp_path / "project")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "JOURNEYS_PROJECT_DIR": str(project),
           "JOURNEYS_DB": str(project / "warehouse" / "journeys.duckdb")}  # fmt: skip
    command = [str(WEBSERVER), "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)]
    log = tmp_path / "webserver.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_serving(url, process, log)
            yield url
        finally:
            stop(process)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: make browser-deps")
def test_asset_graph_shows_the_journey_assets(webserver, tmp_path):
    page = f"{webserver}/locations/orchestration.definitions/asset-groups/journey_state"
    names = (
        "transitions",
        "actions",
        "segment_membership",
        "journey_goal_matches",
        "journey_enrollments",
        "journey_actions",
    )
    for _ in range(3):  # the graph is laid out client-side; a slow machine may need another look
        dom = chromium(tmp_path, "--dump-dom", page)
        if all(name in dom for name in names):
            break
    missing = [name for name in names if name not in dom]
    assert not missing, f"not on the page: {missing}"

    lineage = chromium(tmp_path, "--dump-dom", f"{webserver}/asset-groups")
    for group in ("sources", "staging", "generated", "journey_state", "analyst_relations"):
        assert group in lineage

    screenshot = tmp_path / "asset_graph.png"
    chromium(tmp_path, f"--screenshot={screenshot}", page)
    assert screenshot.stat().st_size > 10_000
