"""An exclusive lock on an output, so that two runs never write one directory at once (training's ``--out``, a
runner's ``--out_dir`` task folder). The lock file holds its owner's pid and host, which the refusal names."""

from __future__ import annotations

import os
from pathlib import Path


class DirLock:
    """``flock`` on ``path`` (created, with its directory). ``acquire()`` returns None, or the holder's description
    when another process holds it; the lock drops when this process releases it or exits."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None

    def acquire(self) -> str | None:
        import fcntl
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            return holder
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        return None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None
