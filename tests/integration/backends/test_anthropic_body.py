"""The streamed Message Batches body: canonical chunk files go block by block, others line by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_tokentier.backends import AnthropicBatchBackend
from airflow_provider_tokentier.backends.anthropic import _RequestsBody
from airflow_provider_tokentier.core.requests import serialize_request
from airflow_provider_tokentier.core.wire_ids import to_wire
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
@pytest.mark.parametrize("scope", [None, "t0123456789"])
def test_body_is_the_exact_requests_array(tmp_path, monkeypatch, separator, trailing, canonical, scope):
    monkeypatch.setattr("airflow_provider_tokentier.backends.anthropic.READ_CHUNK_SIZE", 64)  # many blocks
    rows = [anthropic_row(f"r-{i}") for i in range(7)]
    body = _RequestsBody(_write(tmp_path / "c.jsonl", rows, separator=separator, trailing=trailing), scope)
    sent = b"".join(body)
    assert body._canonical is canonical
    assert body.request_count == len(rows)
    assert body.content_length() == len(sent)
    sent_ids = [r["custom_id"] for r in json.loads(sent)["requests"]]
    assert sent_ids == [
        r["custom_id"] if scope is None else to_wire(scope, r["custom_id"], i) for i, r in enumerate(rows)
    ]
    assert json.loads(sent)["requests"][3]["params"] == rows[3]["params"]


def test_a_scoped_id_too_long_to_travel_verbatim_sends_the_file_line_by_line(tmp_path):
    rows = [anthropic_row("r-0"), anthropic_row("x" * 60), anthropic_row("r-2")]
    body = _RequestsBody(_write(tmp_path / "c.jsonl", rows), "t0123456789")
    sent = b"".join(body)
    assert body._canonical is False
    assert body.content_length() == len(sent)
    assert [r["custom_id"] for r in json.loads(sent)["requests"]] == [
        "t0123456789-r-0",
        "t0123456789_1",
        "t0123456789-r-2",
    ]


def test_a_non_canonical_file_still_submits(
    emu: Emulator, anthropic_backend: AnthropicBatchBackend, tmp_path
):
    rows = [anthropic_row(f"r-{i}") for i in range(5)]
    path = _write(tmp_path / "c.jsonl", rows, separator=b"\n\n")
    batch_id = anthropic_backend.submit(path, request_count=5, tag={})
    assert anthropic_backend.retrieve(batch_id).total == 5
    with pytest.raises(ValueError, match="holds 5 request lines"):
        anthropic_backend.submit(path, request_count=6, tag={})
