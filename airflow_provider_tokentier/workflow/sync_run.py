"""Land validated request rows run on the flex or standard tier, retry-safely.

Shared by the sync-tier operators, the tiered operator and the deadline rescue.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.backends.sync_tiers import ClientSource, InfoLogger, run_sync_tier
from airflow_provider_tokentier.core.budget import SKIPPED_BUDGET, SpendMeter
from airflow_provider_tokentier.core.parts import DEFAULT_PART_ROWS, DEFAULT_PART_SECONDS
from airflow_provider_tokentier.core.result_rows import ResultTally
from airflow_provider_tokentier.state.blockio import open_block_writer
from airflow_provider_tokentier.state.ledger import children
from airflow_provider_tokentier.state.parts import PartWriter
from airflow_provider_tokentier.state.row_heads import RowHead, iter_row_heads


def _is_final(head: RowHead) -> bool:
    """Succeeded, or failed in a way that running it again would not change."""
    if head.status == "succeeded":
        return True
    return head.status == "errored" and not (head.error or {}).get("retryable", True)


def land_on_sync_tier(
    rows: Iterable[Mapping[str, Any]],
    target: ObjectStoragePath,
    state_dir: ObjectStoragePath,
    *,
    provider: str,
    tier: str,
    client: ClientSource,
    log: InfoLogger,
    part_rows: int = DEFAULT_PART_ROWS,
    part_seconds: float = DEFAULT_PART_SECONDS,
    max_cost_usd: float | None = None,
    **executor_options: Any,
) -> dict[str, Any]:
    """Run ``rows`` on flex or standard and land one row per request at ``target``, retry-safely.

    Each try writes the rows it finishes as numbered part objects of its own under
    ``state_dir`` (object stores have no append, and an unclosed object is not there at all),
    one every ``part_rows`` rows or ``part_seconds`` seconds: a worker killed mid-run loses at
    most one part. A retry or a clear first reads the parts and skips every request an earlier
    try already finished (succeeded, or failed permanently), so nothing is paid for twice;
    then it lands the earlier rows and the new ones together, the newest row of each request
    winning. One listing and one read per part, never a call per row. ``client`` builds the
    provider's async SDK client on the executor's event loop (see
    ``hooks.base.async_client_factory``). Returns the results manifest.

    With ``max_cost_usd`` requests stop at the cap (what earlier tries spent counts too); the
    rest land ``skipped_budget`` and the manifest's ``budget`` says so.
    """
    progress = state_dir / "sync-progress"
    progress.mkdir(parents=True, exist_ok=True)
    earlier = children(progress)
    finished: set[str] = set()
    spent_before = 0.0
    for path in earlier:
        for _line, head in iter_row_heads(path):
            if _is_final(head):
                finished.add(head.custom_id)
            spent_before += head.cost_usd or 0.0
    if finished:
        log.info("Earlier tries already finished %d request(s); running only the rest", len(finished))
    started_ns = time.time_ns()
    with PartWriter(
        progress, f"{started_ns:020d}-{os.getpid()}", part_rows=part_rows, part_seconds=part_seconds
    ) as parts:
        run_sync_tier(
            (row for row in rows if row["custom_id"] not in finished),
            provider=provider,
            tier=tier,
            client=client,
            out=parts,  # type: ignore[arg-type]  # the executor only calls write() and flush()
            logger=log,
            budget=SpendMeter(max_cost_usd, spent=spent_before) if max_cost_usd is not None else None,
            **executor_options,
        )
    tally = ResultTally()
    landed: set[str] = set()
    model: str | None = None
    with open_block_writer(target) as out:
        for path in [*parts.parts, *reversed(earlier)]:
            for line, head in iter_row_heads(path):
                if head.custom_id in landed:
                    continue
                out.write(line)
                tally.add_values(head.status, head.tier, head.cost_usd, head.standard_cost_usd)
                landed.add(head.custom_id)
                model = model or head.model
    manifest = tally.manifest(
        results_uri=str(target),
        provider=provider,
        submitted_at=_started_at(earlier[0].name if earlier else f"{started_ns:020d}"),
        model=model,
    )
    if max_cost_usd is not None:
        skipped = manifest["counts"][SKIPPED_BUDGET]
        manifest["budget"] = {
            "max_cost_usd": max_cost_usd,
            "spent_usd": manifest["cost_usd"],
            "stopped": "sync" if skipped else None,
            "skipped": skipped,
        }
    return manifest


def _started_at(first_progress_name: str) -> str:
    nanos = int(first_progress_name.split("-", 1)[0])
    return datetime.datetime.fromtimestamp(nanos / 1e9, datetime.timezone.utc).isoformat()
