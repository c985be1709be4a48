"""One writer per output directory: a lock file held (``fcntl.lockf``) for as long as a run trains.

The kernel releases the lock when its process dies, so a lock left by a killed run is taken over (with a
message); the file records the holder's PID and host for the message a second writer sees.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".rankclip-train.lock"
log = logging.getLogger(__name__)


class OutputDirBusyError(RuntimeError):
    """Another live process is writing the same output directory; the message names it."""


@contextmanager
def exclusive_output_dir(output_dir: Path) -> Iterator[None]:
    """Hold ``output_dir``'s lock while the block runs; refuse at once if another process holds it."""
    path = Path(output_dir) / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
    try:
        handle.seek(0)
        previous = handle.read().strip()
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputDirBusyError(
                f"{output_dir} is being written by another `rankclip train` "
                f"({previous or 'unknown process'}, "
                f"lock {path}); wait for it to end or stop it, or use another --output-dir"
            ) from None
        if previous:
            log.warning("taking over the lock of %s in %s: that run is no longer alive", previous, output_dir)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.lockf(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
