"""The "LLM workloads" page over 10,000 tokentier task instances, beside Airflow's own TI list.

A real api-server (``airflow api-server``, SQLite metadata DB, SimpleAuthManager) with the
tokentier plugin; the DB is seeded with DAGs, runs, task instances and one progress record per
task instance, as the worker writes them (``task_state_store``, key ``tokentier_progress``).
Each endpoint is called over HTTP with a JWT, warm, ``--repeat`` times, taking turns:

- ours: ``/tokentier/api/workloads`` (a page of 100 rows plus totals per day and per DAG and
  turnaround percentiles over every matching row) and ``/tokentier/workloads`` (the HTML page);
- anchor: Airflow's ``/api/v2/dags/~/dagRuns/~/taskInstances?limit=100`` over the same rows
  (a page of 100 plus ``total_entries``), measured in the same run.

    uv run --locked python -m bench.ui_workloads [--tis 10000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sqlite3
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from bench import common
from tests.e2e.harness import AirflowStack

DAGS = 20
TASKS_PER_RUN = 10
MODELS = {"anthropic": ["claude-haiku-4-5", "claude-sonnet-4-5"], "openai": ["gpt-6-luna", "gpt-6-mini"]}
COLUMNS = [("endpoint", "endpoint"), ("median_ms", "median ms"), ("p95_ms", "p95 ms"), ("ratio", "/ anchor")]


def _ts(at: datetime) -> str:
    """How Airflow's UtcDateTime columns store a time in SQLite (naive UTC)."""
    return at.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


def _record(rng: random.Random, started: datetime, landed: bool) -> dict[str, Any]:
    """A progress record as the worker writes it (a batch sensor, one or two rounds)."""
    provider = rng.choice(sorted(MODELS))
    rounds = 1 if rng.random() < 0.8 else 2
    total = rng.choice([200, 1000, 5000])
    errored = rng.randint(0, 5)
    cost = round(total * 0.00004 * rng.uniform(0.8, 1.2), 6)
    finished = started + timedelta(seconds=rng.lognormvariate(8.5, 0.6))
    batches = [
        {
            "id": f"msgbatch_{uuid.UUID(int=rng.getrandbits(128)).hex}",
            "round": r + 1,
            "status": "ended" if landed or r + 1 < rounds else "in_progress",
            "requests": total if r == 0 else 20,
            "counts": {"succeeded": total - errored, "errored": errored},
            "url": "https://console.anthropic.com/workspaces/default/batches/x",
        }
        for r in range(rounds)
    ]
    return {
        "schema_version": 1,
        "operator": "BatchSensor",
        "provider": provider,
        "model": rng.choice(MODELS[provider]),
        "tier": "batch",
        "decision": {"tier": "batch", "reasons": ["deadline leaves room for a batch"], "costs": {}},
        "phase": "landed" if landed else "waiting",
        "round": rounds,
        "max_rounds": 3,
        "batches": batches,
        "batches_total": rounds,
        "totals": {
            "total": total,
            "succeeded": total - errored if landed else 0,
            "errored": errored if landed else 0,
            "pending": 0 if landed else total,
        },
        "cost_usd": cost if landed else 0.0,
        "standard_cost_usd": cost * 2 if landed else 0.0,
        "savings_usd": cost if landed else 0.0,
        "deadline": (started + timedelta(hours=8)).isoformat(),
        "expected_finish": {"p50": (started + timedelta(hours=1)).isoformat()},
        "errors": [{"type": "overloaded_error", "count": errored, "examples": []}] if errored else [],
        "started_at": started.isoformat(),
        "updated_at": (finished if landed else started).isoformat(),
    }


def seed(db_path: Path, tis: int, seed_value: int = 7) -> int:
    """``tis`` tokentier task instances across ``DAGS`` DAGs, each with a progress record."""
    rng = random.Random(seed_value)
    runs_per_dag = max(1, tis // (DAGS * TASKS_PER_RUN))
    now = datetime.now(timezone.utc)
    with contextlib.closing(sqlite3.connect(db_path, timeout=60)) as db, db:
        db.execute("INSERT OR IGNORE INTO dag_bundle (name, active) VALUES ('bench', 1)")
        seeded = 0
        for d in range(DAGS):
            dag_id = f"bench_dag_{d:02d}"
            db.execute(
                "INSERT INTO dag (dag_id, is_paused, is_stale, bundle_name, timetable_type, "
                "partition_mapper_info, max_active_tasks, max_consecutive_failed_dag_runs, "
                "has_task_concurrency_limits) VALUES (?, 0, 0, 'bench', 'NullTimetable', 'null', 16, 0, 0)",
                (dag_id,),
            )
            for r in range(runs_per_dag):
                run_at = now - timedelta(hours=6 * r + d)
                run_id = f"scheduled__{run_at.isoformat()}"
                cursor = db.execute(
                    "INSERT INTO dag_run (dag_id, run_id, run_type, run_after, start_date, state) "
                    "VALUES (?, ?, 'scheduled', ?, ?, 'success')",
                    (dag_id, run_id, _ts(run_at), _ts(run_at)),
                )
                run_pk = cursor.lastrowid
                ti_rows, store_rows = [], []
                for t in range(TASKS_PER_RUN):
                    landed = r > 0 or rng.random() < 0.5
                    started = run_at + timedelta(seconds=t)
                    task_id = f"wait_{t}"
                    ti_rows.append(
                        (uuid.uuid4().hex, task_id, dag_id, run_id, "success" if landed else "deferred",
                         _ts(started), _ts(started + timedelta(hours=2)) if landed else None, "BatchSensor")
                    )  # fmt: skip
                    value = json.dumps(_record(rng, started, landed))
                    store_rows.append((run_pk, task_id, dag_id, run_id, value, _ts(now)))
                db.executemany(
                    "INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, try_number, "
                    "max_tries, pool, pool_slots, state, start_date, end_date, operator) "
                    "VALUES (?, ?, ?, ?, -1, 1, 0, 'default_pool', 1, ?, ?, ?, ?)",
                    ti_rows,
                )
                db.executemany(
                    "INSERT INTO task_state_store (dag_run_id, task_id, map_index, key, dag_id, run_id, "
                    "value, updated_at) VALUES (?, ?, -1, 'tokentier_progress', ?, ?, ?, ?)",
                    store_rows,
                )
                seeded += len(ti_rows)
    return seeded


def _time(
    client: httpx.Client, cases: list[tuple[str, str, dict[str, Any]]], repeat: int
) -> list[list[float]]:
    """Milliseconds per call of each case; the cases take turns, so a change in the machine's
    load (it is shared) falls on all of them alike."""
    for _label, path, params in cases * 2:  # warm: imports, caches, the SQLite page cache
        client.get(path, params=params).raise_for_status()
    samples: list[list[float]] = [[] for _ in cases]
    for _ in range(repeat):
        for i, (_label, path, params) in enumerate(cases):
            start = time.perf_counter()
            response = client.get(path, params=params)
            samples[i].append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    return samples


def run(tis: int = 10_000, repeat: int = 20) -> list[dict[str, Any]]:
    """Seed, start the api-server, time the three endpoints; one row per endpoint."""
    home = common.work_dir("ui-workloads")
    shutil.rmtree(home, ignore_errors=True)
    dags = home / "dags"
    dags.mkdir(parents=True)
    stack = AirflowStack(home, dags, fast=False)
    stack.start(components=["api-server"])
    try:
        seeded = seed(home / "airflow.db", tis)
        client = httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.api.token()}"}, timeout=120
        )
        with client:
            ours = client.get("/tokentier/api/workloads").json()
            anchor = client.get("/api/v2/dags/~/dagRuns/~/taskInstances", params={"limit": 100}).json()
            assert ours["total_entries"] == seeded == anchor["total_entries"], (ours["total_entries"], seeded)
            cases = [
                (
                    "anchor: /api/v2 TI list, limit 100",
                    "/api/v2/dags/~/dagRuns/~/taskInstances",
                    {"limit": 100},
                ),
                ("ours: /tokentier/api/workloads (JSON)", "/tokentier/api/workloads", {}),
                ("ours: /tokentier/workloads (HTML)", "/tokentier/workloads", {}),
                ("ours: JSON, provider=openai filter", "/tokentier/api/workloads", {"provider": "openai"}),
            ]
            rows = [
                {
                    "endpoint": label,
                    "median_ms": statistics.median(samples),
                    "p95_ms": sorted(samples)[max(0, int(len(samples) * 0.95) - 1)],
                    "tis": seeded,
                }
                for (label, _path, _params), samples in zip(cases, _time(client, cases, repeat), strict=True)
            ]
    finally:
        stack.stop()
    anchor_ms = rows[0]["median_ms"]
    for row in rows:
        row["ratio"] = row["median_ms"] / anchor_ms
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ui_workloads", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tis", type=int, default=10_000, help="task instances to seed")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per endpoint")
    args = parser.parse_args(argv)
    rows = run(args.tis, args.repeat)
    print(f"## LLM workloads page over {rows[0]['tis']:,} task instances (warm, {args.repeat} calls each)")
    print(common.format_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
