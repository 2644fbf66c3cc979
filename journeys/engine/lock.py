"""One writer at a time: an exclusive lock beside the database file, released by the OS if a run dies."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from journeys.errors import StateError


@contextmanager
def run_lock(db_path: Path, *, wait_seconds: float = 0.0, what: str = "run", on_takeover=print) -> Iterator[None]:
    """Hold `<db>.lock` for the duration; wait up to `wait_seconds` for a live holder, then fail clearly.

    The file keeps the holder's pid and host while held. If we acquire it and find that text, its
    run died without releasing cleanly: we say so and take over (the kernel already freed the lock).
    """
    lock_path = Path(f"{db_path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")
    deadline = time.monotonic() + wait_seconds
    acquired = False
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                acquired = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise StateError(
                        f"{db_path} is locked by another run ({holder}); wait for it to finish, "
                        "pass --wait SECONDS, or use another --db"
                    ) from None
                time.sleep(0.2)
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            on_takeover(f"note: taking over the lock of a run that died ({previous}); its uncommitted work was discarded")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, {what}")
        handle.flush()
        yield
    finally:
        if acquired:  # a clean exit leaves the file empty: no takeover message next time
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
