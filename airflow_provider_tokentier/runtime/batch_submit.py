"""Validate, chunk and submit a batch workload retry-safely (shared by the batch and tiered operators)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from airflow_provider_tokentier.backends import batch_backend
from airflow_provider_tokentier.core.budget import (
    BudgetExceededError,
    check_within_cap,
    estimate_rows_cost,
)
from airflow_provider_tokentier.core.records import SubmissionManifest
from airflow_provider_tokentier.hooks.base import provider_hook
from airflow_provider_tokentier.runtime.settings import resolve_price_table
from airflow_provider_tokentier.runtime.task_state import state_dir_for, task_key
from airflow_provider_tokentier.state.ledger import Ledger, storage_path
from airflow_provider_tokentier.workflow.submission import (
    Workload,
    iter_jsonl,
    prepare_workload,
    submit_chunks,
)


def check_budget(workload: Workload, ledger: Ledger, max_cost_usd: float | None, prices: Any) -> float | None:
    """Refuse a workload whose batch-tier estimate exceeds ``max_cost_usd``; return the estimate.

    Checked until the first batch is recorded: a retry after that keeps what it started.
    """
    if max_cost_usd is None:
        return None
    estimate, unpriced = estimate_rows_cost(
        (
            row
            for chunk in workload.chunks
            for row in iter_jsonl(storage_path(chunk.uri), source="chunk file")
        ),
        workload.provider,
        "batch",
        resolve_price_table(prices),
    )
    if not ledger.batches(0):
        problem = check_within_cap(
            max_cost_usd, 0.0, estimate, unpriced, f"the workload ({workload.total} requests, batch tier)"
        )
        if problem is not None:
            raise BudgetExceededError(f"{problem}. Nothing was submitted.")
    return estimate


if TYPE_CHECKING:
    from airflow.sdk.types import Logger


def submit_workload(
    context: Context,
    open_rows: Callable[[], Iterable[Mapping[str, Any]]],
    *,
    provider: str,
    conn_id: str | None,
    endpoint: str | None,
    model: str | None,
    state_root: str | None,
    caps: Mapping[str, int | None],
    safety_margin: float,
    log: Logger,
    max_cost_usd: float | None = None,
    prices: Any = None,
) -> dict[str, Any]:
    """Validate, chunk and submit a workload retry-safely; return the submission manifest."""
    hook = provider_hook(provider, conn_id)
    state_dir = state_dir_for(context, state_root)
    backend = batch_backend(provider, hook.get_client())
    workload = prepare_workload(
        open_rows,
        provider=provider,
        state_dir=state_dir,
        endpoint=endpoint,
        default_model=model,
        caps=caps,
        safety_margin=safety_margin,
        backend=backend,
    )
    log.info(
        "Validated %d requests into %d batch(es) (state: %s)", workload.total, len(workload.chunks), state_dir
    )
    ledger = Ledger(state_dir)
    estimate = check_budget(workload, ledger, max_cost_usd, prices)
    batches = submit_chunks(
        workload.chunks,
        backend=backend,
        ledger=ledger,
        task_key=task_key(context),
        fingerprint=workload.fingerprint,
        endpoint=workload.endpoint,
    )
    first_intent = min(
        (float(r["at"]) for n in ledger.names("intent-") if (r := ledger.read(n)) is not None),
        default=None,
    )
    submitted_at = datetime.datetime.fromtimestamp(first_intent or 0, datetime.timezone.utc).isoformat()
    return SubmissionManifest(
        provider=provider,
        conn_id=hook.conn_id,
        state_uri=str(state_dir),
        requests_uri=workload.requests_uri,
        endpoint=workload.endpoint,
        model=workload.model,
        fingerprint=workload.fingerprint,
        total=workload.total,
        caps=dict(caps),
        safety_margin=safety_margin,
        batches=tuple(batches),
        submitted_at=submitted_at,
        max_cost_usd=max_cost_usd,
        estimated_cost_usd=estimate,
    ).to_dict()
