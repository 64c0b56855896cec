"""Object-store traffic of whole DAG runs, measured on a real S3 API server (moto_server).

    uv run --locked python -m bench.object_store                  # 1,000 and 10,000 requests
    uv run --locked python -m bench.object_store --rows 1000 --rows 5000

Each workload runs with ``dag.test()`` (real Airflow, the trigger inline) against the emulator in
its own process, with ``[tokentier] state_root = s3://<conn_id>@bucket/prefix`` on a
``moto_server`` on loopback. The server's access log counts every S3 request; listing the
bucket afterwards counts the state objects. The figures go to ``docs/SCALING.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench import common

WORKLOADS = ("anthropic-batch", "openai-batch", "openai-flex")


def _dag(workload: str, dag_id: str, rows: int) -> Any:
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_tokentier.operators import BatchSubmitOperator, FlexOperator
    from airflow_provider_tokentier.sensors import BatchSensor
    from tests.airflow.helpers import rows_for

    provider = workload.split("-", 1)[0]
    requests = rows_for(provider, rows)
    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        if workload.endswith("flex"):
            FlexOperator(task_id="run", conn_id="tt_openai", requests=requests, max_concurrency=32)
        else:
            submit = BatchSubmitOperator(
                task_id="submit", provider=provider, conn_id=f"tt_{provider}", requests=requests
            )
            BatchSensor(task_id="ready", submission=submit.output, poll_interval=0.2)
    return dag


def measure(workload: str, rows: int, s3: Any, bucket: str) -> dict[str, Any]:
    """One DAG run: S3 requests by method, state objects, and the rows it landed."""
    from tests.airflow.helpers import run_dag

    dag_id = f"bench_{workload.replace('-', '_')}_{rows}_{os.getpid()}"
    dag = _dag(workload, dag_id, rows)
    s3.reset(settle=1.0)
    started = time.perf_counter()
    result = run_dag(dag)
    wall = time.perf_counter() - started
    by_method = s3.requests(settle=1.0)
    manifest = result.xcoms.get("ready") or result.xcoms.get("run") or {}
    keys = s3.keys(bucket, f"state/{dag_id}/")
    objects = len(keys)
    total = sum(by_method.values())
    return {
        "workload": workload,
        "rows": rows,
        "state": result.state,
        "landed": manifest.get("total"),
        "rounds": manifest.get("rounds"),
        "s3_requests": total,
        "by_method": by_method,
        "state_objects": objects,
        "requests_per_1000_rows": round(total * 1000 / rows, 1),
        "wall_s": round(wall, 1),
        "objects": [key.split("/", 3)[-1] for key in keys],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, action="append", help="workload sizes (default 1000 and 10000)")
    parser.add_argument("--only", action="append", choices=WORKLOADS)
    parser.add_argument("--list-objects", action="store_true", help="print every state object's key")
    parser.add_argument("--expire-rate", type=float, default=0.0, help="share of batch requests expiring")
    args = parser.parse_args(argv)
    sizes = args.rows or [1000, 10000]
    from tests.s3server import MotoS3

    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    emulator = common.start_emulator(
        time_scale=7200.0, batch_turnaround_s=3600.0, expire_rate=args.expire_rate
    )
    results = []
    try:
        with MotoS3() as s3:
            bucket = s3.create_bucket("tokentier-bench")
            os.environ.update(common.connection_env(emulator.base_url))
            os.environ.update(s3.connection_uri_env("bench_s3"))
            os.environ["AIRFLOW__TOKENTIER__STATE_ROOT"] = f"s3://bench_s3@{bucket}/state"
            for workload in args.only or WORKLOADS:
                for rows in sizes:
                    row = measure(workload, rows, s3, bucket)
                    results.append(row)
                    print(json.dumps(row if args.list_objects else {**row, "objects": None}), flush=True)
    finally:
        emulator.stop()
    print()
    print("| workload | rows | S3 requests | by method | per 1,000 rows | state objects | rounds | wall s |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        methods = ", ".join(f"{k} {v}" for k, v in sorted(r["by_method"].items()))
        print(
            f"| {r['workload']} | {r['rows']:,} | {r['s3_requests']:,} | {methods} | "
            f"{r['requests_per_1000_rows']} | {r['state_objects']} | {r['rounds']} | {r['wall_s']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
