"""Long commands draw progress on a terminal (a pseudo-terminal here) and nothing when piped."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import copy_project

CLI = [sys.executable, "-m", "journeys.cli"]


def on_a_terminal(command: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run with stdout and stderr on a pty; return the exit code and everything drawn."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "JOURNEYS_PROGRESS": "1"}
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(master)
    return process.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_demo_and_run_show_progress_on_a_terminal_and_nothing_when_piped(tmp_path):
    project = copy_project(tmp_path / "p")
    db = project / "warehouse" / "demo.duckdb"
    base = [*CLI, "--project-dir", str(project), "--db", str(db)]

    code, drawn = on_a_terminal([*base, "demo", "--users", "100", "--days", "1"], project)
    assert code == 0, drawn[-2000:]
    assert "demo: 1/2 runs" in drawn or "0/2" in drawn  # the bar over the demo's runs

    code, drawn = on_a_terminal([*base, "run", "--as-of", "2026-11-03T09:00:00"], project)
    assert code == 0, drawn[-2000:]
    assert "dbt build" in drawn  # the spinner names the phase

    piped = subprocess.run([*base, "run", "--as-of", "2026-11-03T10:00:00"], capture_output=True, text=True, timeout=300, check=False)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stdout + piped.stderr  # no terminal codes in a pipe
    assert "dbt build" not in piped.stderr
