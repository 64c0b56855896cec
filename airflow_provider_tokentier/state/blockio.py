"""Block-sized reads and writes on ObjectStoragePath files, for JSONL hot paths.

Every ``write()`` or ``readline()`` on an ObjectStoragePath handle goes through Airflow's
lineage wrapper, which builds ``str(path)`` and records an asset on each call; for JSONL rows
of a few hundred bytes that costs more than the I/O itself. These helpers touch the handle
once per MiB instead of once per row.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO, Any

import msgspec
from airflow.sdk import ObjectStoragePath

BLOCK_SIZE = 1 << 20
# Bytes per os.copy_file_range call (it may copy less; the loop goes on until it copies 0).
_COPY_STEP = 1 << 30

# The encoder `dumps_line` uses (msgspec.json.encode), kept to encode into a buffer.
_encoder = msgspec.json.Encoder()


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

    def write_json_line(self, obj: Any) -> None:
        """Encode ``obj`` as one compact JSON line straight into the buffer (no bytes in between)."""
        _encoder.encode_into(obj, self._buffer, -1)
        self._buffer += b"\n"
        if len(self._buffer) >= BLOCK_SIZE:
            self._drain()

    def copy_local_file(self, source: IO[bytes]) -> bool:
        """Append all of ``source`` through ``os.copy_file_range`` when both are local files.

        The kernel then copies the bytes (a fraction of the CPU of reading and writing them
        here, which is most of what landing a batch's outcome file costs). Returns False, having
        copied nothing, when either is not a local file, the kernel refuses the copy, or this
        writer feeds a digest.
        """
        copy_file_range = getattr(os, "copy_file_range", None)  # Linux only
        if copy_file_range is None or self._digest is not None:  # the digest must see every byte
            return False
        try:
            source_fd, target_fd = source.fileno(), self._handle.fileno()
        except (OSError, ValueError):  # not backed by a local file
            return False
        self.flush()  # what was written before goes first
        copied = False
        try:
            while copy_file_range(source_fd, target_fd, _COPY_STEP):
                copied = True
        except OSError:
            if copied:
                raise
            return False
        # Airflow's lineage wrapper records files as read and written on read() and write() calls.
        source.read(0)
        self._handle.write(b"")
        return True

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
    """Append the whole of ``source`` to ``writer``: by the kernel between local files, else in blocks."""
    with source.open("rb") as handle:
        if writer.copy_local_file(handle):
            return
        while block := handle.read(BLOCK_SIZE):
            writer.write(block)
