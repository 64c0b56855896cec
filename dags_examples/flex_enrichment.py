"""Flex enrichment: label the last hour's support tickets on OpenAI flex, falling back to standard.

export_tickets -> classify_tickets (FlexOperator) -> store_labels.

The support dashboard refreshes hourly: a label may take minutes, not a day, so the batch tier's
hours-long turnaround does not fit, and nobody waits on an individual ticket, so the list price
of the standard tier is wasted. OpenAI's flex tier (``service_tier="flex"``) charges the batch
rate with seconds-to-minutes latency. Its failure mode is capacity: a 429 "resource unavailable"
(not billed). `FlexOperator` backs off and retries for ``flex_patience`` seconds per request, then
runs that request on standard (``on_unavailable="standard"``), so the hour's tickets always get
labelled; each result row records the tier that actually served it.

Settings from the environment: ``TOKENTIER_TICKETS`` (default 300), ``TOKENTIER_ENRICH_MODEL``
(a flex model, default gpt-6-luna), ``TOKENTIER_FLEX_PATIENCE`` (seconds, default 300).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, task

from airflow_provider_tokentier.operators import FlexOperator
from airflow_provider_tokentier.results import read_results
from airflow_provider_tokentier.state.ledger import resolve_state_root

TICKETS = int(os.environ.get("TOKENTIER_TICKETS", "300"))
MODEL = os.environ.get("TOKENTIER_ENRICH_MODEL", "gpt-6-luna")
FLEX_PATIENCE = float(os.environ.get("TOKENTIER_FLEX_PATIENCE", "300"))

LABELS = ("billing", "bug", "how-to", "account", "feature-request")
_SUBJECTS = (
    "charged twice for the annual plan",
    "export to CSV crashes on large projects",
    "how do I rotate an API key",
    "cannot log in after SSO migration",
    "please add dark mode to the dashboard",
)


def _ticket(i: int) -> str:
    """Stand-in for a ticket pulled from the help desk."""
    seed = hashlib.sha256(f"ticket-{i}".encode()).hexdigest()[:8]
    return f"Ticket #{i} ({seed}): {_SUBJECTS[i % len(_SUBJECTS)]}. Customer on plan {i % 3 + 1}."


def _label(text: str) -> str:
    lowered = text.lower()
    return next((label for label in LABELS if label in lowered), "unlabeled")


with DAG(
    dag_id="flex_enrichment",
    schedule="5 * * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["tokentier", "flex", "enrichment"],
    doc_md=__doc__,
) as dag:

    @task
    def export_tickets(**context: Any) -> str:
        """One classification request per new ticket, as a JSONL file; returns its URI."""
        run_id = str(context["run_id"]).replace(":", "_").replace("+", "_")
        path = resolve_state_root(None) / "inputs" / "flex_enrichment" / run_id / "requests.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        instructions = (
            f"Classify the support ticket as one of: {', '.join(LABELS)}. Reply with the label only."
        )
        with path.open("w") as out:
            for i in range(TICKETS):
                body = {
                    "max_completion_tokens": 8,
                    "messages": [
                        {"role": "system", "content": instructions},
                        {"role": "user", "content": _ticket(i)},
                    ],
                }
                out.write(json.dumps({"custom_id": f"ticket-{i:06d}", "body": body}) + "\n")
        return str(path)

    classify = FlexOperator(
        task_id="classify_tickets",
        requests_uri=export_tickets(),
        endpoint="/v1/chat/completions",
        model=MODEL,
        flex_patience=FLEX_PATIENCE,
        on_unavailable="standard",
    )

    @task
    def store_labels(manifest: dict[str, Any]) -> dict[str, Any]:
        """Write each ticket's label for the dashboard; report labels, tiers served and cost."""
        store = ObjectStoragePath(manifest["results_uri"]).parent / "ticket_labels.jsonl"
        labels: collections.Counter[str] = collections.Counter()
        served: collections.Counter[str] = collections.Counter()
        with store.open("w") as out:
            for row in read_results(manifest):
                if row["status"] != "succeeded":
                    continue
                text = row["response"]["choices"][0]["message"]["content"] or ""
                label = _label(text)
                labels[label] += 1
                served[row["tier"]] += 1
                out.write(
                    json.dumps({"ticket": row["custom_id"], "label": label, "tier": row["tier"]}) + "\n"
                )
        summary = {
            "labelled": sum(labels.values()),
            "labels": dict(labels),
            "served_by_tier": dict(served),
            "counts": manifest["counts"],
            "label_store": str(store),
            "cost_usd": manifest["cost_usd"],
            "standard_cost_usd": manifest["standard_cost_usd"],
            "savings_usd": manifest["savings_usd"],
        }
        print(json.dumps(summary, indent=2))
        return summary

    store_labels(classify.output)
