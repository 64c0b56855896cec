"""The streamed Message Batches body: canonical chunk files go block by block, others line by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_tokentier.backends import AnthropicBatchBackend
from airflow_provider_tokentier.backends.anthropic import _RequestsBody
from airflow_provider_tokentier.core.requests import serialize_request
from airflow_provider_tokentier.testing import Emulator
from tests.integration.backends.conftest import anthropic_row


def _write(path: Path, rows: list[dict], *, separator: bytes = b"\n", trailing: bytes = b"\n") -> Path:
    path.write_bytes(separator.join(serialize_request(r, "anthropic") for r in rows) + trailing)
    return path


@pytest.mark.parametrize(
    ("separator", "trailing", "canonical"),
    [
        (b"\n", b"\n", True),  # what tokentier writes
        (b"\n\n", b"\n", False),  # blank lines
        (b"\r\n", b"\r\n", True),  # CRLF: the \r stays as JSON whitespace
        (b"\n  \n", b"", False),  # a whitespace-only line, no final newline
    ],
)
def test_body_is_the_exact_requests_array(tmp_path, monkeypatch, separator, trailing, canonical):
    monkeypatch.setattr("airflow_provider_tokentier.backends.anthropic.READ_CHUNK_SIZE", 64)  # many blocks
    rows = [anthropic_row(f"r-{i}") for i in range(7)]
    body = _RequestsBody(_write(tmp_path / "c.jsonl", rows, separator=separator, trailing=trailing))
    sent = b"".join(body)
    assert body._canonical is canonical
    assert body.request_count == len(rows)
    assert body.content_length() == len(sent)
    assert [r["custom_id"] for r in json.loads(sent)["requests"]] == [r["custom_id"] for r in rows]


def test_a_non_canonical_file_still_submits(
    emu: Emulator, anthropic_backend: AnthropicBatchBackend, tmp_path
):
    rows = [anthropic_row(f"r-{i}") for i in range(5)]
    path = _write(tmp_path / "c.jsonl", rows, separator=b"\n\n")
    batch_id = anthropic_backend.submit(path, request_count=5, tag={})
    assert anthropic_backend.retrieve(batch_id).total == 5
    with pytest.raises(ValueError, match="holds 5 request lines"):
        anthropic_backend.submit(path, request_count=6, tag={})
