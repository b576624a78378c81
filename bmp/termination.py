"""Stopping a command cleanly on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes,
SLURM and ``kill`` send before they kill a job).

:func:`bmp.cli.main` turns both signals into :class:`Interrupted` for the whole
command, so that any command stops at once with one line and exit code 128 +
the signal's number (130, 143), its ``finally`` blocks run. ``bmp run``,
``bmp eval`` and ``bmp video`` hold :func:`stop_after_batch` around their work:
there the first signal only asks them to stop (:class:`StopRequest`); they
finish or drop the batch in flight, write what is complete and then raise
:class:`Interrupted` themselves. A second signal stops at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The command stops because of signal ``signum``. A KeyboardInterrupt, so
    that all the clean-up that already follows Ctrl-C follows SIGTERM too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number: what a shell reports for a process the signal ended."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)


def stopped_line(exc: KeyboardInterrupt) -> str:
    """The one line a stopped command prints (stderr)."""
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    return f"bmp: {what}; re-run the same command to resume"


@dataclass
class StopRequest:
    """Set by the first signal inside :func:`stop_after_batch`; the command
    checks it between batches."""

    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal (130, 143); 0 while none came."""
        return 0 if self.signum is None else 128 + self.signum

    def of_any_rank(self, dist: Any) -> int | None:
        """The signal any rank received (every rank must call this at the same
        point): a sharded run stops, and reports, as one."""
        return next((s for s in dist.all_gather(self.signum) if s is not None), None)

    def raise_if_stopped(self, signum: int | None = None) -> None:
        """:class:`Interrupted` for ``signum`` (another rank's) or this request's signal, if any."""
        signum = signum or self.signum
        if signum is not None:
            raise Interrupted(signum)


#: The request the current :func:`stop_after_batch` window fills; None outside one.
_window: StopRequest | None = None


def _handle(signum: int, frame: FrameType | None) -> None:
    request = _window
    if request is None or request.requested:
        raise Interrupted(signum)
    request.signum = signum
    if signum == signal.SIGINT:  # someone at a terminal wants to know it was heard
        from tqdm import tqdm

        tqdm.write("bmp: stopping after the batch in flight (Ctrl-C again to stop at once)")


@contextmanager
def signals_handled() -> Iterator[None]:
    """SIGINT and SIGTERM go through this module while the block runs (only the
    main thread can set handlers; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler set outside Python, which cannot be put back; the default is closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


@contextmanager
def stop_after_batch() -> Iterator[StopRequest]:
    """The window in which a first signal only fills the returned request
    (decoding workers ignore the signals: :func:`ignore_in_worker`)."""
    global _window
    outer, _window = _window, StopRequest()
    request = _window
    try:
        with signals_handled():
            yield request
    finally:
        _window = outer


def ignore_in_worker(worker_id: int = 0) -> None:
    """A decoding worker's ``worker_init_fn``: SIGINT and SIGTERM sent to the
    whole process group (Ctrl-C, SLURM) are the main process's to act on; a
    worker they killed would break the batch being finished. The main process
    ends its workers itself, and they exit when it dies."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def report(exc: KeyboardInterrupt) -> int:
    """Print the stopped line and return the exit code."""
    print(stopped_line(exc), file=sys.stderr)
    return exit_code(exc)
