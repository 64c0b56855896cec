"""Block-sized reads and writes on ObjectStoragePath files, for JSONL hot paths.

Every ``write()`` or ``readline()`` on an ObjectStoragePath handle goes through Airflow's
lineage wrapper, which builds ``str(path)`` and records an asset on each call; for JSONL rows
of a few hundred bytes that costs more than the I/O itself. These helpers touch the handle
once per MiB instead of once per row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

BLOCK_SIZE = 1 << 20


class BlockWriter:
    """Collects writes and passes them on in blocks of at least ``BLOCK_SIZE`` bytes.

    ``digest`` (a hashlib object), when given, is fed each block as it is passed on.
    """

    def __init__(self, handle: IO[bytes], *, digest: Any = None) -> None:
        self._handle = handle
        self._buffer = bytearray()
        self._digest = digest

    def write(self, data: bytes) -> int:
        """Buffer ``data``, passing the buffer on once a block is full; return its length."""
        self._buffer += data
        if len(self._buffer) >= BLOCK_SIZE:
            self._drain()
        return len(data)

    def write_line(self, data: bytes) -> None:
        """Buffer ``data`` and a newline after it (one call per JSONL row)."""
        buffer = self._buffer
        buffer += data
        buffer += b"\n"
        if len(buffer) >= BLOCK_SIZE:
            self._drain()

    def flush(self) -> None:
        """Pass on everything written so far (the file's own buffering still applies)."""
        self._drain()
        self._handle.flush()

    def _drain(self) -> None:
        if self._buffer:
            block = bytes(self._buffer)
            if self._digest is not None:
                self._digest.update(block)
            self._handle.write(block)
            self._buffer.clear()


@contextlib.contextmanager
def open_block_writer(path: ObjectStoragePath) -> Iterator[BlockWriter]:
    """Open ``path`` for writing through a `BlockWriter`; everything is written on exit."""
    with path.open("wb") as handle:
        writer = BlockWriter(handle)
        yield writer
        writer._drain()


def iter_blocks(path: ObjectStoragePath) -> Iterator[bytes]:
    """The bytes of ``path``, ``BLOCK_SIZE`` at a time."""
    with path.open("rb") as handle:
        while block := handle.read(BLOCK_SIZE):
            yield block


def iter_lines(path: ObjectStoragePath) -> Iterator[bytes]:
    """The non-empty lines of ``path`` (newline included), read a block at a time."""
    with path.open("rb") as handle:
        tail = b""
        while block := handle.read(BLOCK_SIZE):
            lines = (tail + block).split(b"\n")
            tail = lines.pop()
            for line in lines:
                if line.strip():
                    yield line + b"\n"
        if tail.strip():
            yield tail + b"\n"


def copy_blocks(source: ObjectStoragePath, writer: BlockWriter) -> None:
    """Append the whole of ``source`` to ``writer`` a block at a time."""
    with source.open("rb") as handle:
        while block := handle.read(BLOCK_SIZE):
            writer.write(block)
