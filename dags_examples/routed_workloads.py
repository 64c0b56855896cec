"""Routed workloads: three LLM workloads through `TieredInferenceOperator`, each on the tier it can tolerate.

Nobody picks a tier here: each task describes *when its output is needed* and the router
(``choose_tier``) picks the cheapest tier that makes it, then runs the workload there and returns
the same results manifest, with the decision and its reasons (also in the task log):

* ``draft_agent_replies`` -- reply drafts a support agent is waiting on (``interactive=True``):
  only **standard** answers in seconds, whatever the price.
* ``summarize_incidents`` -- incident summaries for a review meeting in 20 minutes: batch (hours)
  cannot make it, **flex** can, at the batch rate (429s fall back to standard).
* ``catalog_descriptions`` -- thousands of product descriptions for tomorrow's catalog, a 20 h
  budget and enough volume for the batch discount to matter: **batch**, waiting in the triggerer
  and re-batching like `BatchSensor`, with a standard rescue for the tail.

``show_decisions`` prints each decision (tier and reasons) from XCom.

Settings from the environment: ``TOKENTIER_REPLY_REQUESTS`` (default 5),
``TOKENTIER_INCIDENT_REQUESTS`` (default 50), ``TOKENTIER_CATALOG_REQUESTS`` (default 5000),
``TOKENTIER_MIN_BATCH_SAVINGS`` (the router's crossover in USD for the catalog, default 1.00),
``TOKENTIER_POLL_INTERVAL`` (seconds, default 60).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_tokentier.operators import TieredInferenceOperator
from airflow_provider_tokentier.state.ledger import resolve_state_root

REPLY_REQUESTS = int(os.environ.get("TOKENTIER_REPLY_REQUESTS", "5"))
INCIDENT_REQUESTS = int(os.environ.get("TOKENTIER_INCIDENT_REQUESTS", "50"))
CATALOG_REQUESTS = int(os.environ.get("TOKENTIER_CATALOG_REQUESTS", "5000"))
MIN_BATCH_SAVINGS = float(os.environ.get("TOKENTIER_MIN_BATCH_SAVINGS", "1.00"))
POLL_INTERVAL = float(os.environ.get("TOKENTIER_POLL_INTERVAL", "60"))

ANTHROPIC_MODEL = "claude-haiku-4-5"
OPENAI_MODEL = "gpt-6-luna"  # offers flex

WORKLOADS = ("draft_agent_replies", "summarize_incidents", "catalog_descriptions")


def _write(context: dict[str, Any], name: str, rows: list[dict[str, Any]]) -> str:
    run_id = str(context["run_id"]).replace(":", "_").replace("+", "_")
    path = resolve_state_root(None) / "inputs" / "routed_workloads" / run_id / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    return str(path)


with DAG(
    dag_id="routed_workloads",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["tokentier", "router", "standard", "flex", "batch"],
    doc_md=__doc__,
) as dag:

    @task
    def export_reply_requests(**context: Any) -> str:
        rows = [
            {
                "custom_id": f"reply-{i:04d}",
                "params": {
                    "max_tokens": 300,
                    "messages": [{"role": "user", "content": f"Draft a reply to open ticket {i}."}],
                },
            }
            for i in range(REPLY_REQUESTS)
        ]
        return _write(context, "replies", rows)

    @task
    def export_incident_requests(**context: Any) -> str:
        rows = [
            {
                "custom_id": f"incident-{i:04d}",
                "body": {
                    "max_completion_tokens": 128,
                    "messages": [{"role": "user", "content": f"Summarize incident {i}: impact, cause, fix."}],
                },
            }
            for i in range(INCIDENT_REQUESTS)
        ]
        return _write(context, "incidents", rows)

    @task
    def export_catalog_requests(**context: Any) -> str:
        rows = [
            {
                "custom_id": f"sku-{i:06d}",
                "params": {
                    "max_tokens": 512,
                    "messages": [{"role": "user", "content": f"Write the catalog description of SKU {i}."}],
                },
            }
            for i in range(CATALOG_REQUESTS)
        ]
        return _write(context, "catalog", rows)

    replies = TieredInferenceOperator(
        task_id="draft_agent_replies",
        provider="anthropic",
        model=ANTHROPIC_MODEL,
        requests_uri=export_reply_requests(),
        interactive=True,
        latency_budget="30s",
    )
    incidents = TieredInferenceOperator(
        task_id="summarize_incidents",
        provider="openai",
        endpoint="/v1/chat/completions",
        model=OPENAI_MODEL,
        requests_uri=export_incident_requests(),
        latency_budget="20m",
    )
    catalog = TieredInferenceOperator(
        task_id="catalog_descriptions",
        provider="anthropic",
        model=ANTHROPIC_MODEL,
        requests_uri=export_catalog_requests(),
        latency_budget="20h",
        min_batch_savings_usd=MIN_BATCH_SAVINGS,
        rescue_tier="standard",
        poll_interval=POLL_INTERVAL,
    )

    @task
    def show_decisions(
        draft_agent_replies: dict[str, Any],
        summarize_incidents: dict[str, Any],
        catalog_descriptions: dict[str, Any],
    ) -> dict[str, Any]:
        """Print each workload's tier and the router's reasons; return them."""
        manifests = {
            "draft_agent_replies": draft_agent_replies,
            "summarize_incidents": summarize_incidents,
            "catalog_descriptions": catalog_descriptions,
        }
        decisions: dict[str, Any] = {}
        for name, manifest in manifests.items():
            decision = manifest["decision"]
            print(f"{name}: {decision['tier'].upper()} ({manifest['total']} requests)")
            for reason in decision["reasons"]:
                print(f"  - {reason}")
            decisions[name] = {
                "tier": decision["tier"],
                "reasons": decision["reasons"],
                "estimated_cost_usd": decision["estimated_cost_usd"],
                "cost_usd": manifest["cost_usd"],
                "tiers": manifest["tiers"],
                "counts": manifest["counts"],
            }
        return decisions

    show_decisions(
        draft_agent_replies=replies.output,
        summarize_incidents=incidents.output,
        catalog_descriptions=catalog.output,
    )
