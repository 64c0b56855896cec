"""`count_lines` (the chunk-file check before an upload) counts what `split_lines` yields."""

from __future__ import annotations

import pytest

from airflow_provider_tokentier.backends import base
from airflow_provider_tokentier.backends.base import count_lines, split_lines


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"a":1}\n{"a":2}\n', 2),
        (b'{"a":1}\n{"a":2}', 2),  # no final newline
        (b'\n{"a":1}\n\n\n{"a":2}\n\n', 2),  # blank lines, one first
        (b'{"a":1}\r\n  \t \n{"a":2}\r\n   ', 2),  # CRLF, whitespace-only lines and tail
        (b"", 0),
        (b"\n \n", 0),
        (b'{"a":1}\n   ', 1),  # a whitespace tail
        (b'{"a":1}\n  \x0b  \n{"a":2}', 2),  # a whitespace-only line cut across blocks
    ],
)
def test_count_lines_counts_the_non_blank_lines(tmp_path, monkeypatch, content, expected):
    monkeypatch.setattr(base, "READ_CHUNK_SIZE", 3)  # lines cut across many blocks
    path = tmp_path / "c.jsonl"
    path.write_bytes(content)
    assert count_lines(path) == expected == sum(1 for _ in split_lines([content]))
