"""Embedding backfill: re-embed a document corpus with OpenAI's Batch API, chunked to its caps.

export_passages -> submit_embeddings (BatchSubmitOperator, ``/v1/embeddings``) ->
embeddings_ready (BatchSensor) -> store_vectors.

A backfill (a new embedding model, a re-chunked corpus) has no reader waiting on it: the search
index switches over when it is done, so the 24-hour batch window at the 0.5x batch price fits.
It is also bigger than one batch may hold: OpenAI caps a batch at 50,000 requests, 50,000
embedding inputs and 200 MB. `BatchSubmitOperator` streams the rows into as many batches as the
caps require and `BatchSensor` waits for all of them, re-batching expiries, before one result row
per document lands.

The demo caps batches far below OpenAI's limits so that chunking shows on a small corpus
(``TOKENTIER_MAX_REQUESTS_PER_BATCH`` defaults to 500 and ``TOKENTIER_MAX_EMBEDDING_INPUTS_PER_BATCH``
to 2,000). Production sets both to ``0``: the real caps (50,000 requests and 50,000 embedding
inputs per batch) then apply.

Settings from the environment: ``TOKENTIER_BACKFILL_DOCS`` (default 2000),
``TOKENTIER_PASSAGES_PER_DOC`` (embedding inputs per request, default 4),
``TOKENTIER_EMBEDDING_MODEL`` (default text-embedding-4-small), the two caps above, and
``TOKENTIER_POLL_INTERVAL`` (seconds, default 60).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, task

from airflow_provider_tokentier.operators import BatchSubmitOperator
from airflow_provider_tokentier.results import read_results
from airflow_provider_tokentier.sensors import BatchSensor
from airflow_provider_tokentier.state.ledger import resolve_state_root

DOCS = int(os.environ.get("TOKENTIER_BACKFILL_DOCS", "2000"))
PASSAGES_PER_DOC = int(os.environ.get("TOKENTIER_PASSAGES_PER_DOC", "4"))
MODEL = os.environ.get("TOKENTIER_EMBEDDING_MODEL", "text-embedding-4-small")
# 0 (or empty) means "the provider's real cap".
MAX_REQUESTS = int(os.environ.get("TOKENTIER_MAX_REQUESTS_PER_BATCH", "500") or 0) or None
MAX_INPUTS = int(os.environ.get("TOKENTIER_MAX_EMBEDDING_INPUTS_PER_BATCH", "2000") or 0) or None
POLL_INTERVAL = float(os.environ.get("TOKENTIER_POLL_INTERVAL", "60"))


def _passages(i: int) -> list[str]:
    """Stand-in for one document of the corpus, split into passages."""
    seed = hashlib.sha256(f"doc-{i}".encode()).hexdigest()
    return [
        f"Doc {i}, passage {p}: release notes, migration steps and known issues ({seed[p * 6 : p * 6 + 6]})."
        for p in range(PASSAGES_PER_DOC)
    ]


with DAG(
    dag_id="embedding_backfill",
    schedule="0 3 * * 6",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["tokentier", "batch", "embeddings", "chunking"],
    doc_md=__doc__,
) as dag:

    @task
    def export_passages(**context: Any) -> str:
        """One embeddings request per document (its passages as the inputs), as a JSONL file."""
        run_id = str(context["run_id"]).replace(":", "_").replace("+", "_")
        path = resolve_state_root(None) / "inputs" / "embedding_backfill" / run_id / "requests.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for i in range(DOCS):
                row = {"custom_id": f"doc-{i:06d}", "body": {"input": _passages(i)}}
                out.write(json.dumps(row) + "\n")
        return str(path)

    submit = BatchSubmitOperator(
        task_id="submit_embeddings",
        provider="openai",
        endpoint="/v1/embeddings",
        requests_uri=export_passages(),
        model=MODEL,
        max_requests_per_batch=MAX_REQUESTS,
        max_embedding_inputs_per_batch=MAX_INPUTS,
    )

    ready = BatchSensor(
        task_id="embeddings_ready",
        submission=submit.output,
        deadline=datetime.timedelta(hours=23),
        rebatch="expired+retryable",
        max_rounds=4,
        poll_interval=POLL_INTERVAL,
    )

    @task
    def store_vectors(manifest: dict[str, Any], submission: dict[str, Any]) -> dict[str, Any]:
        """Write every passage vector to the vector store; report what landed over how many batches."""
        store = ObjectStoragePath(manifest["results_uri"]).parent / "vectors.jsonl"
        docs = vectors = 0
        dimensions: set[int] = set()
        with store.open("w") as out:
            for row in read_results(manifest):
                if row["status"] != "succeeded":
                    continue
                docs += 1
                for item in row["response"]["data"]:
                    vector = item["embedding"]
                    dimensions.add(len(vector))
                    out.write(
                        json.dumps({"doc": row["custom_id"], "passage": item["index"], "vector": vector})
                    )
                    out.write("\n")
                    vectors += 1
        summary = {
            "docs": docs,
            "vectors": vectors,
            "dimensions": sorted(dimensions),
            "batches": len(submission["batches"]),
            "batch_sizes": [b["requests"] for b in submission["batches"]],
            "rounds": manifest["rounds"],
            "counts": manifest["counts"],
            "vector_store": str(store),
            "cost_usd": manifest["cost_usd"],
            "standard_cost_usd": manifest["standard_cost_usd"],
            "savings_usd": manifest["savings_usd"],
        }
        print(json.dumps(summary, indent=2))
        return summary

    store_vectors(ready.output, submit.output)
