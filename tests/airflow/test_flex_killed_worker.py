"""A flex run whose worker is SIGKILLed mid-run: the retry pays again for at most one progress
part's rows, on S3 (moto_server) as on local disk, as the emulator's billing shows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.flex_worker import flex_dag
from tests.airflow.helpers import landed_rows, run_dag

ROWS = 60
PART_ROWS = 10


def _parts(state_root: str, moto_s3: Any) -> list[bytes]:
    """The contents of every progress part written so far."""
    if state_root.startswith("s3://"):
        bucket, _, prefix = state_root.split("@", 1)[1].partition("/")
        client = moto_s3.client()
        keys = [k for k in moto_s3.keys(bucket, prefix) if "/sync-progress/" in k]
        return [client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]
    return [p.read_bytes() for p in Path(state_root).glob("**/sync-progress/*.jsonl")]


@pytest.mark.parametrize("where", ["s3", "local"])
def test_the_retry_of_a_killed_flex_worker_pays_again_for_at_most_one_part(
    emulator: Any, dag_id: str, request: pytest.FixtureRequest, tmp_path: Path, where: str
) -> None:
    if where == "s3":
        moto_s3 = request.getfixturevalue("moto_s3")
        state_root = request.getfixturevalue("s3_root")
    else:
        moto_s3, state_root = None, str(tmp_path / "state")
    emulator.configure(latency_ms=40, flex_429_rate=0.0)
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.airflow.flex_worker", dag_id, state_root, str(ROWS), str(PART_ROWS)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 240
        while len(_parts(state_root, moto_s3)) < 2 and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    time.sleep(0.5)  # a request in flight when the worker died still ends (and bills) at the emulator
    kept = sum(part.count(b"\n") for part in _parts(state_root, moto_s3))
    billed_before_retry = emulator.billing()["requests_billed"]
    assert kept >= 2 * PART_ROWS
    assert billed_before_retry < ROWS

    calls_before = emulator.calls().get("POST /v1/chat/completions", 0)
    result = run_dag(flex_dag(dag_id, state_root, ROWS, PART_ROWS))
    assert result.states == {"enrich": "success"}
    assert emulator.calls().get("POST /v1/chat/completions", 0) - calls_before == ROWS - kept
    landed = landed_rows(result.xcoms["enrich"])
    assert sorted(r["custom_id"] for r in landed) == [f"o-{i:04d}" for i in range(ROWS)]
    assert {r["status"] for r in landed} == {"succeeded"}
    paid_twice = emulator.billing()["requests_billed"] - ROWS
    assert 0 <= paid_twice <= PART_ROWS
