"""Run an iterator in a background thread, its items handed over through a bounded queue.

Prediction tracks faces (decode → detector → tracker → alignment) in one thread while the caller's
thread runs the model on the crops: on a machine with two cores the two overlap, and on a GPU the
host work of detection overlaps the model's kernels. :func:`background` keeps the order of the
items, holds at most ``maxsize`` of them (memory stays bounded whatever the speeds), raises in the
caller the exception that ended the source, or that closing it raised (with its message and
traceback), after the items before it, raises a RuntimeError rather than waiting for good should the
thread die without a word, and stops the thread when the caller stops early (``close()``, a
``break``, an exception).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

__all__ = ["background"]

T = TypeVar("T")
_ITEM, _ERROR, _END = 0, 1, 2


def background(
    source: Iterator[T], *, maxsize: int = 8, name: str = "background"
) -> Generator[T, None, None]:
    """The items of ``source``, in order, produced by a daemon thread ``name``.

    The thread starts at the first ``next()``; ``source`` is closed in that thread (its ``finally``
    blocks run there) when it ends, fails or the consumer stops.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()

    def put(message: tuple[int, object]) -> bool:
        while not stop.is_set():
            try:
                q.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        outcome: tuple[int, object] = (_END, None)
        closing: BaseException | None = None  # what source.close() raised
        try:
            for item in source:
                if not put((_ITEM, item)):
                    return  # the consumer stopped (the finally below closes the source)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            outcome = (_ERROR, err)
        finally:
            close = getattr(source, "close", None)
            try:
                if close is not None:
                    close()
            except BaseException as err:  # noqa: BLE001 - the source's first error wins
                closing = err
                if outcome[0] == _END:
                    outcome = (_ERROR, err)
                else:
                    outcome[1].add_note(f"closing the source also failed: {err!r}")  # type: ignore[union-attr]
            # always handed over (unless the consumer has left): without it the consumer would wait
            if not put(outcome) and closing is not None:
                raise closing  # nobody is left to raise it in: threading.excepthook reports it

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            kind, value = _take(q, worker)
            if kind == _ITEM:
                yield value  # type: ignore[misc]
            elif kind == _ERROR:
                raise value  # type: ignore[misc]
            else:
                return
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue, then let it end
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(0.05)


def _take(q: queue.Queue, worker: threading.Thread, poll_s: float = 0.2) -> tuple[int, object]:
    """The next message; a RuntimeError, not a hang, when the worker died without handing one over."""
    while True:
        try:
            return q.get(timeout=poll_s)
        except queue.Empty:
            if worker.is_alive():
                continue
        try:  # it may have put its last message just before it ended
            return q.get_nowait()
        except queue.Empty:
            raise RuntimeError(
                f"background thread {worker.name!r} ended without handing over its items' outcome "
                "(its traceback went to stderr)"
            ) from None
