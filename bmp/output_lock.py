"""One bmp process at a time per output folder.

Two runs writing one folder gave two images the same id and logs that could not
be resumed. Every command that writes into ``--out`` takes an exclusive
``fcntl.flock`` on ``OUT/.bmp.lock`` before it changes anything there, and a
second process is refused with one line naming the holder's pid (written into
the file). The kernel drops the lock when its holder exits, however it dies, so
a crash never leaves a folder locked; a clean exit also removes the file.

Under torchrun, rank 0 holds the folder's lock (it prepares the folder and
writes the merged results) and every other rank the lock of its own log
(``.predictions.rank{R}.jsonl.lock``); a refusal on any rank stops them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from .coco import OutputError

LOCK_NAME = ".bmp.lock"

#: The descriptors holding locks in this process. A forked child (a decoding
#: worker) closes its copies at once: a flock belongs to the open file, so a
#: child outliving a killed holder would otherwise keep the folder locked.
_held_fds: set[int] = set()


def _close_in_child() -> None:
    for fd in _held_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_fds.clear()


os.register_at_fork(after_in_child=_close_in_child)


class OutputBusy(OutputError):
    """Another process holds the lock of an output folder or log."""


def log_lock_path(log: Path) -> Path:
    """The lock file of one rank's log: hidden, next to it."""
    return log.with_name(f".{log.name}.lock")


def _holder(fd: int) -> str:
    """The pid the holder wrote; it writes it right after locking, so an empty
    file is read again for a moment before giving up."""
    for _ in range(10):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "unknown"


def _lock(path: Path, what: str) -> int:
    """An open descriptor of ``path`` holding its exclusive lock.

    Raises:
        OutputBusy: another process holds it.
        OutputError: the lock file cannot be created or locked.
    """
    while True:
        try:
            # O_CLOEXEC: a started program must not hold the lock on after this process ends.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputBusy(f"{what} is in use by another bmp process (pid {holder}); "
                             "wait for it to end or use another --out") from None
        except OSError as exc:  # e.g. a network file system without locks
            os.close(fd)
            raise OutputError(f"cannot lock {path}: {exc.strerror or exc}") from None
        # The previous holder removes the file as it releases it: a lock taken on the
        # removed file guards nothing, so lock the file now at the path instead.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only the message lacks the pid
    return fd


class OutputLocks:
    """The locks one command holds, all released when its ``with`` block ends.

    Taking a lock this object already holds does nothing, so one video written
    straight into ``--out`` does not lock the folder twice.
    """

    def __init__(self) -> None:
        self._held: dict[Path, int] = {}

    def folder(self, folder: Path) -> None:
        """Lock an output folder (which must exist)."""
        self._take(Path(folder) / LOCK_NAME, f"--out {folder}")

    def log(self, log: Path) -> None:
        """Lock one rank's log in a folder that another rank locks."""
        self._take(log_lock_path(Path(log)), str(log))

    def shared(self, out: Path, dist: Any, log: Path | None = None) -> None:
        """Every rank's lock on a folder they share (all ranks call this together):
        the folder's on rank 0, ``log``'s on the others. A refusal on any rank
        is raised on every rank, so none starts work another cannot do."""
        error: OutputError | None = None
        try:
            if dist.is_main:
                self.folder(out)
            elif log is not None:
                self.log(log)
        except OutputError as exc:
            error = exc
        refused = next((e for e in dist.all_gather(error) if e is not None), None)
        if refused is not None:
            self.release()
            raise refused

    def _take(self, path: Path, what: str) -> None:
        path = path.absolute()
        if path not in self._held:
            self._held[path] = _lock(path, what)
            _held_fds.add(self._held[path])

    def release(self) -> None:
        """Remove the lock files, then let the locks go (in that order: a process
        waiting on a removed file starts again on a new one)."""
        held, self._held = self._held, {}
        for path, fd in held.items():
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    path.unlink()
            except OSError:
                pass  # gone already, or the folder became read-only: the kernel lock still ends
            finally:
                _held_fds.discard(fd)
                os.close(fd)

    def __enter__(self) -> OutputLocks:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
