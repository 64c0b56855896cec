"""`PartWriter` on real files: parts by row count, by age, and the rest on close."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.state.parts import PartWriter


def _line(i: int) -> bytes:
    return b'{"custom_id": "r%d"}\n' % i


def _root(tmp_path: Path) -> ObjectStoragePath:
    return ObjectStoragePath(f"file://{tmp_path}")


def test_a_part_every_part_rows_rows_and_the_rest_on_close(tmp_path: Path) -> None:
    with PartWriter(_root(tmp_path), "try", part_rows=3, part_seconds=3600) as out:
        for i in range(8):
            out.write(_line(i))
            out.flush()
        assert [p.name for p in out.parts] == ["try-p00000.jsonl", "try-p00001.jsonl"]
    assert [p.name for p in out.parts] == ["try-p00000.jsonl", "try-p00001.jsonl", "try-p00002.jsonl"]
    assert [p.read_bytes().count(b"\n") for p in out.parts] == [3, 3, 2]
    assert b"".join(p.read_bytes() for p in out.parts) == b"".join(_line(i) for i in range(8))


def test_rows_waiting_longer_than_part_seconds_are_written_without_another_row(tmp_path: Path) -> None:
    with PartWriter(_root(tmp_path), "try", part_rows=1000, part_seconds=0.2) as out:
        out.write(_line(0))
        out.flush()
        deadline = time.monotonic() + 10
        while not out.parts and time.monotonic() < deadline:
            time.sleep(0.05)
        # Written by the background thread while the task waits on a slow request.
        assert [p.name for p in out.parts] == ["try-p00000.jsonl"]
        assert (tmp_path / "try-p00000.jsonl").read_bytes() == _line(0)
    assert len(out.parts) == 1


def test_no_rows_no_part(tmp_path: Path) -> None:
    with PartWriter(_root(tmp_path), "try") as out:
        pass
    assert out.parts == []
    assert list(tmp_path.iterdir()) == []


def test_a_part_is_never_seen_half_written(tmp_path: Path) -> None:
    # The local write goes to a hidden temporary sibling and is renamed into place.
    with PartWriter(_root(tmp_path), "try", part_rows=2, part_seconds=3600) as out:
        out.write(_line(0) + _line(1))
        out.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["try-p00000.jsonl"]


@pytest.mark.parametrize(("rows", "seconds"), [(0, 1.0), (1, 0.0)])
def test_bad_limits_are_refused(tmp_path: Path, rows: int, seconds: float) -> None:
    with pytest.raises(ValueError, match="part_"):
        PartWriter(_root(tmp_path), "try", part_rows=rows, part_seconds=seconds)
