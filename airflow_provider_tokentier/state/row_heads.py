"""Reading landed result rows fast: only the fields that counting, merging and re-batching need."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.state.blockio import iter_lines


class RowHead(msgspec.Struct):
    """The head of a result row; msgspec skips the response body unparsed."""

    custom_id: str
    status: str
    tier: str
    cost_usd: float | None
    standard_cost_usd: float | None
    model: str | None = None
    error: dict[str, Any] | None = None

    @property
    def retryable_error(self) -> bool:
        """Whether the row errored in a way worth running again."""
        return self.status == "errored" and bool(self.error and self.error.get("retryable"))


_decoder = msgspec.json.Decoder(RowHead)


def iter_row_heads(path: ObjectStoragePath) -> Iterator[tuple[bytes, RowHead]]:
    """(raw line, head) for every result row of a JSONL file, read a block at a time."""
    for line in iter_lines(path):
        yield line, _decoder.decode(line)
