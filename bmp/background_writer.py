"""Running output work (encoding, JSON, overlays) off the model's thread, in order."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

# A sentinel, not None, so that a task can never be mistaken for the stop signal.
_STOP = object()


class BackgroundWriter:
    """Runs submitted calls one at a time, in submission order, in one daemon thread.

    The queue is bounded so that a slow disk stalls the producer instead of piling
    up decoded images and masks in memory. The first exception raised by a task is
    re-raised in the caller at the next :meth:`submit`, :meth:`flush` or
    :meth:`close` (and every one after); tasks queued after a failure are dropped,
    because output written after a lost record would break the per-image log's order.

    With ``threaded=False`` every call runs inline in :meth:`submit` (its
    exception propagates at once), so a plain run has no thread at all.
    """

    def __init__(self, max_pending: int = 16, threaded: bool = True, name: str = "bmp-writer") -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.threaded = threaded
        self._error: BaseException | None = None
        self._closed = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queues ``fn(*args, **kwargs)``; blocks while ``max_pending`` calls wait.

        Raises:
            the exception of an earlier failed task; RuntimeError after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("BackgroundWriter is closed")
        self._raise_pending()
        if not self.threaded:
            fn(*args, **kwargs)
            return
        self._queue.put((fn, args, kwargs))

    def flush(self) -> None:
        """Waits until every submitted call has run; re-raises a task's exception."""
        if self.threaded and not self._closed:
            self._queue.join()
        self._raise_pending()

    def close(self) -> None:
        """Flushes, then stops the thread. Idempotent."""
        if self._closed:
            self._raise_pending()
            return
        try:
            self.flush()
        finally:
            self._closed = True
            if self._thread is not None:
                self._queue.put(_STOP)
                self._thread.join()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # The body's own error is the one to report; still wait for the queued work so
        # that every record submitted before the failure reaches the disk.
        with contextlib.suppress(BaseException):
            self.close()

    def _raise_pending(self) -> None:
        # Sticky: once a task failed, the output is incomplete, and every later call says so.
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                fn, args, kwargs = item
                if self._error is None:
                    try:
                        fn(*args, **kwargs)
                    except BaseException as error:  # handed to the caller, and an interrupt too
                        self._error = error
            finally:
                self._queue.task_done()
