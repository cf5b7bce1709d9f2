"""Run an iterator in a background thread, its items handed over through a bounded queue.

Prediction tracks faces (decode → detector → tracker → alignment) in one thread while the caller's
thread runs the model on the crops: on a machine with two cores the two overlap, and on a GPU the
host work of detection overlaps the model's kernels. :func:`background` keeps the order of the
items, holds at most ``maxsize`` of them (memory stays bounded whatever the speeds), raises in the
caller the exception that ended the source (with its message and traceback) after the items before
it, and stops the thread when the caller stops early (``close()``, a ``break``, an exception).
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
        try:
            for item in source:
                if not put((_ITEM, item)):
                    return  # the consumer stopped (the finally below closes the source)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            outcome = (_ERROR, err)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        put(outcome)

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            kind, value = q.get()
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
