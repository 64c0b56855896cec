"""`prepare_workload` on a requests_uri file: each request written once, valid lines copied as they are."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.core.errors import RequestValidationError
from airflow_provider_tokentier.core.requests import serialize_request
from airflow_provider_tokentier.state.ledger import Ledger
from airflow_provider_tokentier.workflow.submission import Workload, open_request_rows, prepare_workload

ROW = {"model": "claude-haiku-5-5", "max_tokens": 64, "messages": [{"role": "user", "content": "q"}]}


def _line(custom_id: str, **params: object) -> bytes:
    return json.dumps({"custom_id": custom_id, "params": {**ROW, **params}}, separators=(",", ":")).encode()


def _prepare(tmp_path: Path, lines: list[bytes], default_model: str | None = None) -> Workload:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    return prepare_workload(
        lambda: open_request_rows(None, f"file://{source}"),
        provider="anthropic",
        state_dir=ObjectStoragePath(f"file://{tmp_path / 'state'}"),
        default_model=default_model,
    )


def test_chunk_file_holds_copied_lines_and_re_encoded_ones(tmp_path):
    without_model = json.loads(_line("b"))
    del without_model["params"]["model"]
    # A valid line spelled with spaces after its custom_id goes out as it is.
    spaced = b'{"custom_id":"c", "params": ' + json.dumps(ROW).encode() + b"}"
    lines = [_line("a"), json.dumps(without_model).encode(), spaced]
    workload = _prepare(tmp_path, lines, default_model="claude-opus-5-5")

    (chunk,) = workload.chunks
    filled = {"custom_id": "b", "params": {**without_model["params"], "model": "claude-opus-5-5"}}
    expected = lines[0] + b"\n" + serialize_request(filled, "anthropic") + b"\n" + spaced + b"\n"
    written = Path(ObjectStoragePath(chunk.uri).path).read_bytes()
    assert written == expected
    assert (chunk.requests, workload.total, workload.model) == (3, 3, "claude-haiku-5-5")
    assert workload.fingerprint == hashlib.blake2b(expected, digest_size=16).hexdigest()
    # Each request is written once: the chunk files are the only copy.
    state = tmp_path / "state"
    assert sorted(p.relative_to(state).as_posix() for p in state.rglob("*.jsonl")) == [
        "rounds/r00/c00000.jsonl"
    ]
    assert workload.requests_uri == str(ObjectStoragePath(chunk.uri).parent)
    assert Ledger(ObjectStoragePath(f"file://{state}")).read("workload") == workload.to_dict()


def test_a_retry_with_the_same_file_reuses_the_workload_and_a_changed_default_does_not(tmp_path):
    without_model = json.loads(_line("b"))
    del without_model["params"]["model"]
    lines = [_line("a"), json.dumps(without_model).encode()]
    first = _prepare(tmp_path, lines, default_model="claude-opus-5-5")
    assert _prepare(tmp_path, lines, default_model="claude-opus-5-5") == first
    # Nothing was submitted, so the changed workload replaces the old one.
    changed = _prepare(tmp_path, lines, default_model="claude-sonnet-5-5")
    assert changed.fingerprint != first.fingerprint


def test_a_bad_line_fails_before_anything_is_recorded(tmp_path):
    lines = [_line("a"), _line("b", stream=True)]
    with pytest.raises(RequestValidationError, match=r"^request #1 \(custom_id='b'\): params.stream=true"):
        _prepare(tmp_path, lines)
    assert Ledger(ObjectStoragePath(f"file://{tmp_path / 'state'}")).read("workload") is None
