"""One training per run directory, and a run directory that can take its files.

Two trainings writing into one directory delete each other's checkpoints, and a directory that
cannot be written fails only at the first record, after the work. ``claim_run_directory`` is
called before the first step: it probes that the directory and its ``checkpoints/`` can be
written, and takes an exclusive lock (``fcntl.flock`` on ``<run>/.train.lock``, which holds the
holder's PID and host). The kernel drops the lock when its process dies, however it dies, so a
lock left by a dead process is taken over without asking.
"""
from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path

LOCK_FILE = ".train.lock"


class RunDirectoryBusy(RuntimeError):
    """Another training holds the run directory."""


class RunLock:
    """The lock on a run directory, held until ``release`` or the end of the process."""

    def __init__(self, file):
        self._file = file

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def claim_run_directory(run_dir: Path) -> RunLock:
    """Probe that ``run_dir`` (and its checkpoints folder) can be written, then lock it;
    raise naming the directory and the problem, or the PID that holds it."""
    # An existing checkpoints/ too; a new one is made later in a directory just shown writable.
    for directory in (run_dir, *[d for d in [run_dir / "checkpoints"] if d.is_dir()]):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe-"):
                pass
        except OSError as err:
            raise PermissionError(f"{directory}: cannot write there ({err.strerror or err}); training would fail "
                                  "at its first record or checkpoint, after the work. Make it writable or choose "
                                  "another run directory (hydra.run.dir=...)") from None
    path = run_dir / LOCK_FILE
    file = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "unknown"
        file.close()
        raise RunDirectoryBusy(f"{run_dir} is in use by another training ({holder}, lock {path}): two trainings in "
                               "one directory delete each other's checkpoints. Wait for it to end, or choose another "
                               "run directory (hydra.run.dir=...)") from None
    file.seek(0)
    file.truncate()
    file.write(f"PID {os.getpid()} on {socket.gethostname()}\n")
    file.flush()
    return RunLock(file)
