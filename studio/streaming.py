"""Streaming a generation to a page: the work runs on a worker thread and the page's generator reads what it
streams, the newest snapshot only, then its result or its error."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator


def stream(work: Callable[..., object], *args, **kwargs) -> Iterator[object]:
    """Run `work(*args, on_text=..., **kwargs)` (compare or compare_poles) on a worker thread and yield what it
    streams ({key: answer so far}, at most one snapshot per 0.1 s) and, last, its result; its error, if any, is
    raised here."""
    updates: queue.Queue = queue.Queue()
    done, box = object(), {}

    def run() -> None:
        try:
            box["result"] = work(*args, on_text=updates.put, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            box["error"] = exc
        finally:
            updates.put(done)

    threading.Thread(target=run, daemon=True, name="persona-studio-generate").start()
    while True:
        item = updates.get()
        time.sleep(0.1)  # let snapshots pile up: only the newest one is shown
        while item is not done and not updates.empty():
            item = updates.get_nowait()
        if item is done:
            break
        yield item
    if "error" in box:
        raise box["error"]
    yield box["result"]
