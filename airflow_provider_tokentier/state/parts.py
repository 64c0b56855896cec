"""Progress as numbered part objects: crash-safe on object stores, which have no append.

``flush()`` on an object-store file sends nothing until ``close()``, so a worker killed while
writing one long progress file leaves nothing behind. A `PartWriter` instead collects result
rows and writes them out as a new, complete object (``{prefix}-p00000.jsonl``,
``{prefix}-p00001.jsonl``, ...) every ``part_rows`` rows or ``part_seconds`` seconds, whichever
comes first: a killed worker loses at most the rows of the part it had not written yet, and
the object-store requests grow with the number of parts, not rows.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.core.parts import DEFAULT_PART_ROWS, DEFAULT_PART_SECONDS
from airflow_provider_tokentier.state.ledger import write_whole


class PartWriter:
    """A binary file-like sink that writes what it gets as numbered part objects under ``directory``.

    ``write()`` takes whole JSONL lines; ``flush()`` writes a part when ``part_rows`` rows are
    waiting. A background thread writes waiting rows once the oldest has waited
    ``part_seconds``, so a slow tail of requests cannot hold finished rows back. ``close()``
    (or leaving the ``with`` block) writes the rest and stops the thread. ``parts`` lists the
    objects written, in order.
    """

    def __init__(
        self,
        directory: ObjectStoragePath,
        prefix: str,
        *,
        part_rows: int = DEFAULT_PART_ROWS,
        part_seconds: float = DEFAULT_PART_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if part_rows < 1:
            raise ValueError(f"part_rows must be at least 1, got {part_rows!r}")
        if part_seconds <= 0:
            raise ValueError(f"part_seconds must be positive, got {part_seconds!r}")
        self.directory = directory
        self.prefix = prefix
        self.part_rows = part_rows
        self.part_seconds = part_seconds
        self.parts: list[ObjectStoragePath] = []
        self._clock = clock
        self._buffer = bytearray()
        self._rows = 0
        self._oldest: float | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._timer = threading.Thread(target=self._write_stale, name="tokentier-parts", daemon=True)
        self._timer.start()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, data: bytes) -> int:
        """Take whole JSONL lines (newline-terminated)."""
        with self._lock:
            if self._oldest is None:
                self._oldest = self._clock()
            self._buffer += data
            self._rows += data.count(b"\n")
        return len(data)

    def flush(self) -> None:
        """Write a part if ``part_rows`` rows are waiting (called after every row)."""
        with self._lock:
            if self._rows >= self.part_rows:
                self._write_part()

    def close(self) -> None:
        """Write the waiting rows as a last part and stop the background thread."""
        self._closed.set()
        self._timer.join()
        with self._lock:
            self._write_part()

    def _write_stale(self) -> None:
        tick = min(self.part_seconds / 4, 1.0)
        while not self._closed.wait(tick):
            with self._lock, contextlib.suppress(Exception):
                # A failed write keeps the rows waiting; the next flush() or close() tries
                # again and raises there, in the task's own thread.
                if self._oldest is not None and self._clock() - self._oldest >= self.part_seconds:
                    self._write_part()

    def _write_part(self) -> None:
        if not self._buffer:
            return
        part = self.directory / f"{self.prefix}-p{len(self.parts):05d}.jsonl"
        write_whole(part, bytes(self._buffer))  # one PUT: readers see the whole part or none
        self.parts.append(part)
        self._buffer.clear()
        self._rows = 0
        self._oldest = None
