"""`make demo`: run the nightly doc refresh DAG end to end and print what happened.

Without ``ANTHROPIC_API_KEY`` it runs against the bundled emulator with an accelerated clock
(an hour of batch time passes in about a second) and some expiries and errors, so the
re-batching shows. With the key set, it runs against the real Anthropic API.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from airflow_provider_tokentier.core.log_format import summary_lines

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def _provider() -> Iterator[str]:
    if os.environ.get("ANTHROPIC_API_KEY"):
        yield "the real Anthropic API (ANTHROPIC_API_KEY is set)"
        return
    from airflow_provider_tokentier.testing import Emulator

    knobs = {
        "time_scale": 7200.0,
        "batch_turnaround_s": 3600.0,
        "expire_rate": 0.04,
        "error_rate": 0.02,
        "seed": 7,
    }
    with Emulator(in_process=False, **knobs) as emulator:
        conn = {"conn_type": "tokentier_anthropic", "host": emulator.base_url, "password": "emulator-key"}
        os.environ["AIRFLOW_CONN_ANTHROPIC_DEFAULT"] = json.dumps(conn)
        os.environ.setdefault("TOKENTIER_POLL_INTERVAL", "0.5")
        yield f"the bundled emulator at {emulator.base_url} ({json.dumps(knobs)})"
        billed = emulator.billing()
        print(f"emulator billed:  ${billed['usd']:.6f} for {billed['requests_billed']} requests")


def main() -> None:
    os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags_examples"))
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    with _provider() as where:
        print(f"tokentier demo: nightly_doc_refresh against {where}")
        from dags_examples.nightly_doc_refresh import dag

        started = time.monotonic()
        run = dag.test()
        elapsed = time.monotonic() - started
        print(f"run state:        {run.state} in {elapsed:.1f}s")
        manifest = _return_value(run, "summaries_ready")
        if manifest:
            # The same summary block the sensor wrote to its task log.
            print("\n".join(summary_lines(manifest)))
        stored = _return_value(run, "store_summaries")
        if stored:
            print(f"doc store:        {stored['doc_store']} ({stored['stored']} summaries)")
    if str(run.state) != "success":
        sys.exit(1)


def _return_value(run: object, task_id: str) -> dict | None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")  # type: ignore[attr-defined]
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


if __name__ == "__main__":
    main()
