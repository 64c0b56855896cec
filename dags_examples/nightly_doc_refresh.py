"""Nightly doc refresh: re-summarize thousands of internal docs on the batch tier, at half price.

submit (BatchSubmitOperator) -> generate_ready (BatchSensor, deferrable, re-batches
expiries) -> store_summaries. Nobody reads these summaries before morning, so the
24-hour batch window is free money.

Settings come from the environment so the same file runs in the demo and in production:
``TOKENTIER_DEMO_DOCS`` (number of docs, default 2000), ``TOKENTIER_MODEL``
(default claude-haiku-5-5), ``TOKENTIER_POLL_INTERVAL`` (seconds, default 60).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, task

from airflow_provider_tokentier.operators import BatchSubmitOperator
from airflow_provider_tokentier.results import read_results
from airflow_provider_tokentier.sensors import BatchSensor
from airflow_provider_tokentier.state.ledger import resolve_state_root

DOCS = int(os.environ.get("TOKENTIER_DEMO_DOCS", "2000"))
MODEL = os.environ.get("TOKENTIER_MODEL", "claude-haiku-5-5")
POLL_INTERVAL = float(os.environ.get("TOKENTIER_POLL_INTERVAL", "60"))

_TOPICS = ("on-call runbook", "billing pipeline", "search ranking", "data retention", "SSO rollout")


def _doc(i: int) -> str:
    """Stand-in for an internal doc fetched from a wiki export."""
    topic = _TOPICS[i % len(_TOPICS)]
    seed = hashlib.sha256(str(i).encode()).hexdigest()
    return f"Doc {i}: {topic}. Revision {seed[:8]}. " + " ".join(
        f"Section {s}: owners, decisions and open questions for the {topic} ({seed[s : s + 6]})."
        for s in range(12)
    )


with DAG(
    dag_id="nightly_doc_refresh",
    schedule="0 1 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["tokentier", "batch"],
    doc_md=__doc__,
) as dag:

    @task
    def export_docs(**context: object) -> str:
        """Write one summarization request per doc to a JSONL file and return its URI."""
        run_id = str(context["run_id"]).replace(":", "_").replace("+", "_")
        path = resolve_state_root(None) / "inputs" / "nightly_doc_refresh" / run_id / "requests.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for i in range(DOCS):
                row = {
                    "custom_id": f"doc-{i:06d}",
                    "params": {
                        "max_tokens": 256,
                        "messages": [
                            {"role": "user", "content": f"Summarize for the team wiki:\n\n{_doc(i)}"}
                        ],
                    },
                }
                out.write(json.dumps(row) + "\n")
        return str(path)

    submit = BatchSubmitOperator(
        task_id="submit_summaries",
        provider="anthropic",
        requests_uri=export_docs(),
        model=MODEL,
    )

    ready = BatchSensor(
        task_id="summaries_ready",
        submission=submit.output,
        deadline=datetime.timedelta(hours=8),
        rebatch="expired+retryable",
        max_rounds=4,
        poll_interval=POLL_INTERVAL,
    )

    @task
    def store_summaries(manifest: dict) -> dict:
        """Write each doc's new summary to the doc store; report what landed and what it cost."""
        store = ObjectStoragePath(manifest["results_uri"]).parent / "doc_store.jsonl"
        stored = 0
        with store.open("w") as out:
            for row in read_results(manifest):
                if row["status"] == "succeeded":
                    text = "".join(b.get("text", "") for b in row["response"]["content"])
                    out.write(json.dumps({"doc": row["custom_id"], "summary": text}) + "\n")
                    stored += 1
        return {
            "stored": stored,
            "doc_store": str(store),
            "counts": manifest["counts"],
            "rounds": manifest["rounds"],
            "cost_usd": manifest["cost_usd"],
            "standard_cost_usd": manifest["standard_cost_usd"],
            "savings_usd": manifest["savings_usd"],
            "results_uri": manifest["results_uri"],
        }

    store_summaries(ready.output)
