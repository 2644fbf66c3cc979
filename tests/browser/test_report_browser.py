"""The report's pages render their charts in headless Chromium from disk, with no network and no script error.

JOURNEYS_UPDATE_SCREENSHOT=1 also saves the screenshot as docs/report-screenshot.png.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from journeys.trust.report import build_report
from tests.conftest import REPO
from tests.integration.test_report import demo_database

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium")]
CHROMIUM = Path("/usr/bin/chromium")


def chromium(tmp_path: Path, url: str, *args: str) -> tuple[str, str]:
    """One headless Chromium run with a fresh profile and no network services: (stdout, stderr)."""
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", *args, url]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        return process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> list[Path]:
    db = demo_database(tmp_path_factory.mktemp("report"))
    return build_report(db, tmp_path_factory.mktemp("out"))


def test_every_chart_renders_without_script_errors(pages, tmp_path):
    charts_seen = 0
    for page in pages:
        source = page.read_text()
        expected = source.count('class="chart"')
        dom, log = chromium(tmp_path, page.as_uri(), "--dump-dom")
        assert "</html>" in dom, f"{page.name}: no DOM dumped"
        assert "Uncaught" not in log, f"{page.name}: {[line for line in log.splitlines() if 'Uncaught' in line]}"
        # plotly replaces each chart's empty div by a plot-container holding SVG with drawn traces
        assert dom.count('class="plot-container plotly"') == expected, page.name
        assert dom.count('class="main-svg"') >= expected, page.name
        for chart_id in re.findall(r'<div id="(chart-[a-z-]+)" class="plotly-graph-div', source):
            drawn = dom.split(f'id="{chart_id}"', 1)[1].split("</figure>", 1)[0]
            assert re.search(r'<path[^>]+d="M[^"]+', drawn), f"{page.name}: {chart_id} drew nothing"
            assert 'class="trace' in drawn or 'class="point"' in drawn, f"{page.name}: {chart_id} has no trace"
        charts_seen += expected
    assert charts_seen >= 5


def test_a_page_screenshot_shows_the_report(pages, tmp_path):
    page = max(pages[1:], key=lambda p: p.read_text().count('class="chart"'))  # the journey with the most charts
    shot = tmp_path / "report.png"
    chromium(tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    assert int.from_bytes(data[16:20], "big") == 1280 and int.from_bytes(data[20:24], "big") == 2000
    if os.environ.get("JOURNEYS_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, REPO / "docs" / "report-screenshot.png")
