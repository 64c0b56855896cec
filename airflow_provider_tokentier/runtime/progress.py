"""Publishing the progress record of the running task instance where the Airflow UI reads it.

On Airflow >= 3.3 the record goes to the task state store (``context["task_state_store"]``,
feature-detected), which outlives retries and is not cleared on success by default; on 3.1/3.2
it goes to XCom. Either way under the key ``tokentier_progress``. The record itself is built
by :mod:`airflow_provider_tokentier.core.progress`; this module gathers what a batch wait knows
from its gate (the ledger's harvest totals, the live batch statuses) and writes it.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Context

from airflow_provider_tokentier.core.links import provider_batch_url
from airflow_provider_tokentier.core.progress import (
    PROGRESS_KEY,
    BatchProgress,
    ErrorSamples,
    ProgressRecord,
    combine_rounds,
    expected_finish,
    iso_utc,
)
from airflow_provider_tokentier.runtime.settings import console_url


def publish_progress(context: Context, record: ProgressRecord) -> dict[str, Any]:
    """Write ``record`` for the running task instance; return what was written."""
    data = record.to_dict()
    store = context.get("task_state_store")
    if store is not None:
        store.set(PROGRESS_KEY, data)
    else:
        context["ti"].xcom_push(key=PROGRESS_KEY, value=data)
    return data


class GateView:
    """The gate's ledger facts a record needs, each read once per worker step.

    A step publishes several records (waiting, re-batching, landing); on an object store every
    ledger read is a request, so what cannot change any more is kept: a harvest total once it
    exists, and the batches of a round once the round is recorded.
    """

    def __init__(self, gate: Any) -> None:
        self.gate = gate
        self._harvests: dict[str, dict[str, Any]] = {}
        self._batches: dict[int, list[Any]] = {}

    def harvest(self, batch_id: str) -> dict[str, Any] | None:
        """The harvest totals of one batch (None until it is harvested)."""
        if batch_id not in self._harvests:
            totals = self.gate.ledger.read(f"harvest-{batch_id}")
            if totals is None:
                return None
            self._harvests[batch_id] = totals
        return self._harvests[batch_id]

    def batches_of(self, round_: int) -> list[Any]:
        """The batches of a recorded round."""
        if round_ not in self._batches:
            self._batches[round_] = self.gate.batches_of(round_)
        return self._batches[round_]


def _round_counts(gate: Any, view: GateView, last: int) -> tuple[list[dict[str, int] | None], list[int]]:
    counts: list[dict[str, int] | None] = []
    carried: list[int] = []
    for round_ in range(last + 1):
        summed: dict[str, int] | None = None
        for batch in view.batches_of(round_):
            totals = view.harvest(batch.id)
            if totals is not None:
                summed = summed or {}
                for status, n in totals["counts"].items():
                    summed[status] = summed.get(status, 0) + int(n)
        counts.append(summed)
        following = gate.ledger.read(f"round-{round_ + 1:02d}") if round_ < last else None
        carried.append(int(following["requests"]) if following else 0)
    return counts, carried


def _costs(view: GateView, batch_ids: list[str]) -> tuple[float | None, float | None]:
    nanos = {"cost": 0, "standard": 0}
    unknown = {"cost": False, "standard": False}
    for batch_id in batch_ids:
        totals = view.harvest(batch_id)
        if totals is None:
            continue
        for key in nanos:
            nanos[key] += int(totals["nanos"][key])
            unknown[key] = unknown[key] or bool(totals["unknown"][key])
    cost = None if unknown["cost"] else round(nanos["cost"] / 1e9, 9)
    standard = None if unknown["standard"] else round(nanos["standard"] / 1e9, 9)
    return cost, standard


def _batch_rows(
    gate: Any, view: GateView, last: int, statuses: Mapping[str, Any]
) -> tuple[list[BatchProgress], ErrorSamples]:
    provider = gate.settings.provider
    base = console_url(provider)
    rows: list[BatchProgress] = []
    errors = ErrorSamples()
    for round_ in range(last + 1):
        for batch in view.batches_of(round_):
            totals = view.harvest(batch.id)
            live = statuses.get(batch.id)
            if totals is not None:
                status, counts = "ended", dict(totals["counts"])
                errors.merge(totals.get("errors") or [])
            elif live is not None:
                status, counts = live.status, dict(live.counts)
            else:
                status, counts = "submitted", {}
            if batch.id.startswith("rescue-"):
                status = "completed" if gate.is_harvested(batch) else "running"
            rows.append(
                BatchProgress(
                    id=batch.id,
                    round=round_ + 1,
                    status=status,
                    requests=batch.requests,
                    counts=counts,
                    url=provider_batch_url(provider, batch.id, base),
                )
            )
    return rows, errors


def gate_progress(
    gate: Any,
    *,
    operator: str,
    phase: str,
    max_rounds: int | None,
    statuses: Mapping[str, Any] | None = None,
    deadline: float | None = None,
    rescue: Mapping[str, Any] | None = None,
    turnaround: tuple[float, float] | None = None,
    decision: Mapping[str, Any] | None = None,
    results_uri: str | None = None,
    view: GateView | None = None,
) -> ProgressRecord:
    """The progress record of a batch workload as its gate's state and ``statuses`` show it now.

    ``statuses``: the live `BatchStatus` of batches polled in this step, by id. ``turnaround``:
    the provider/model's (p50, p95) batch turnaround in seconds, for the expected finish.
    ``view``: the step's `GateView` of ``gate``, to read each ledger fact once per step.
    """
    statuses = statuses or {}
    view = view if view is not None and view.gate is gate else GateView(gate)
    last = gate.current_round()
    batches, errors = _batch_rows(gate, view, last, statuses)
    counts, carried = _round_counts(gate, view, last)
    total = int(gate.manifest.get("total") or sum(b.requests for b in view.batches_of(0)))
    cost, standard = _costs(view, [b.id for b in batches])
    round_started = _round_started_at(gate, last)
    return ProgressRecord(
        operator=operator,
        provider=gate.settings.provider,
        model=gate.manifest.get("model"),
        tier="batch",
        phase=phase,
        decision=decision,
        round=last + 1,
        max_rounds=max_rounds,
        batches=batches,
        totals=combine_rounds(total, counts, carried),
        cost_usd=cost,
        standard_cost_usd=standard,
        deadline=iso_utc(deadline),
        expected_finish=None if turnaround is None else expected_finish(round_started, *turnaround),
        rescue=dict(rescue) if rescue else None,
        errors=errors.snapshot(),
        results_uri=results_uri,
        started_at=gate.manifest.get("submitted_at"),
    )


def _round_started_at(gate: Any, round_: int) -> float | None:
    """When this worker submitted ``round_`` (its own clock: the provider's may differ)."""
    if round_ == 0:
        return _submitted_at(gate.manifest)
    intent = gate.ledger.intent(round_, 0)
    return float(intent["at"]) if intent and intent.get("at") is not None else None


def _submitted_at(manifest: Mapping[str, Any]) -> float | None:
    value = manifest.get("submitted_at")
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def elapsed_since(started_at: str | None) -> float | None:
    """Seconds since an ISO 8601 time (None when unknown)."""
    at = _submitted_at({"submitted_at": started_at})
    return None if at is None else max(0.0, time.time() - at)
