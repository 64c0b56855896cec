"""What a tokentier task reports at each worker step: its progress record, its links, its log shape.

One `StepReporter` per worker step (an ``execute``, a resume after a deferral, a poke). It
publishes the progress record (:mod:`~airflow_provider_tokentier.runtime.progress`) and
persists the extra links -- both before every ``defer()`` and on every poke, since a try that
does not resume a deferral starts with the task's XComs cleared -- and it keeps the task log
in the shape of :mod:`~airflow_provider_tokentier.core.log_format`: one folded group per round
(opened when the round starts, left open across a deferral so the trigger's progress lines
fold into it, closed when the round's batches are harvested), and one summary block at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk import Context

from airflow_provider_tokentier.core.links import (
    PROVIDER_BATCH_LINK_KEY,
    VIEW_LINK_KEY,
    provider_batch_url,
    task_instance_view_url,
)
from airflow_provider_tokentier.core.log_format import GROUP_END, group_start, round_title, summary_lines
from airflow_provider_tokentier.core.progress import ErrorSamples, ProgressRecord, iso_utc
from airflow_provider_tokentier.runtime.progress import GateView, gate_progress, publish_progress
from airflow_provider_tokentier.runtime.settings import api_base_url, console_url


class StepReporter:
    """Reports one worker step of one task instance.

    :param context: the task's Airflow context.
    :param operator: the operator's class name, as the record names it.
    :param log: the task logger.
    :param resumed: whether this step resumes a deferral (the current round's group is then
        still open in this try's log).
    :param decision: the router's decision (`TieredInferenceOperator`), recorded as is.
    :param links: whether the operator has tokentier's extra links to persist.
    """

    def __init__(
        self,
        context: Context,
        *,
        operator: str,
        log: Any,
        resumed: bool = False,
        decision: Mapping[str, Any] | None = None,
        links: bool = True,
    ) -> None:
        self.context = context
        self.links = links
        self.operator = operator
        self.log = log
        self.group_open = resumed
        self.decision = decision
        self.last: ProgressRecord | None = None
        self._view: GateView | None = None
        #: The error groups of the rows that landed, when the landing knows them.
        self.final_errors: list[dict[str, Any]] | None = None
        self._memo: dict[str, Any] = {}

    # -- the log -------------------------------------------------------------------------------
    def open_round(self, round_: int, max_rounds: int | None, what: str) -> None:
        """Start the folded group of a round (closing the previous one)."""
        self.close_round()
        self.log.info(group_start(round_title(round_, max_rounds, what)))
        self.group_open = True

    def close_round(self) -> None:
        """End the open round group, if any."""
        if self.group_open:
            self.log.info(GROUP_END)
            self.group_open = False

    def summary(self, manifest: Mapping[str, Any]) -> None:
        """Close the round group and log the summary block of a landed workload."""
        self.close_round()
        for line in summary_lines(manifest):
            self.log.info(line)

    # -- the record and the links ---------------------------------------------------------------
    def publish(self, record: ProgressRecord, batch_id: str | None = None) -> ProgressRecord:
        """Write ``record`` and the links (``batch_id``: the current provider batch, if any)."""
        publish_progress(self.context, record)
        if self.links:
            persist_links(self.context, record.provider, batch_id or _current_batch(record))
        self.last = record
        return record

    def batch_step(self, gate: Any, phase: str, **fields: Any) -> ProgressRecord:
        """Publish the record of a batch workload as ``gate`` shows it (see `gate_progress`)."""
        if self._view is None or self._view.gate is not gate:
            self._view = GateView(gate)
        record = gate_progress(
            gate, operator=self.operator, phase=phase, decision=self.decision, view=self._view, **fields
        )
        return self.publish(record)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per step (e.g. the turnaround history, read from ``state_root``)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def sync_progress(
        self, *, provider: str, tier: str, total: int | None, model: str | None = None
    ) -> Callable[[Any, ErrorSamples], None]:
        """A callback publishing a flex/standard run's record from its running tally.

        The executor calls it at the start, every ``progress_every`` rows and at the end.
        """
        started_at = iso_utc(time.time())

        def on_progress(tally: Any, errors: ErrorSamples) -> None:
            done = int(tally.total)
            known_total = max(total or 0, done)
            self.publish(
                ProgressRecord(
                    operator=self.operator,
                    provider=provider,
                    model=model,
                    tier=tier,
                    phase="running",
                    decision=self.decision,
                    round=1,
                    max_rounds=1,
                    totals={
                        "total": known_total,
                        **tally.counts.to_dict(),
                        "skipped_budget": 0,
                        "pending": known_total - done,
                    },
                    cost_usd=tally.cost_usd(),
                    standard_cost_usd=tally.standard_cost_usd(),
                    errors=errors.snapshot(),
                    started_at=started_at,
                )
            )

        return on_progress

    def landed(self, manifest: Mapping[str, Any], phase: str = "landed") -> ProgressRecord:
        """Publish the final record from the results manifest (exact counts and costs)."""
        counts = dict(manifest.get("counts") or {})
        total = int(manifest.get("total") or sum(counts.values()))
        base = self.last or ProgressRecord(
            operator=self.operator,
            provider=str(manifest.get("provider")),
            tier=_tier_of(manifest),
            phase=phase,
            decision=self.decision,
        )
        base.phase = phase
        base.model = base.model or manifest.get("model")
        base.totals = {"total": total, **counts, "skipped_budget": 0, "pending": 0}
        base.cost_usd = manifest.get("cost_usd")
        base.standard_cost_usd = manifest.get("standard_cost_usd")
        base.results_uri = manifest.get("results_uri")
        base.started_at = base.started_at or manifest.get("submitted_at")
        base.round = int(manifest.get("rounds") or base.round or 1)
        base.expected_finish = None
        if self.final_errors is not None:
            base.errors = self.final_errors
        if base.rescue:
            base.rescue = {**base.rescue, "state": "done"}
        base.updated_at = None  # stamped when written
        return self.publish(base)


def _current_batch(record: ProgressRecord) -> str | None:
    """The batch the task waits on (the first unfinished one), else the most recent one."""
    provider_batches = [b for b in record.batches if b.url]
    for batch in provider_batches:
        if batch.status not in ("ended", "completed", "failed", "expired", "cancelled"):
            return batch.id
    return provider_batches[-1].id if provider_batches else None


def _tier_of(manifest: Mapping[str, Any]) -> str:
    tiers = {k: v for k, v in (manifest.get("tiers") or {}).items() if v}
    return max(tiers, key=lambda k: tiers[k]) if tiers else "batch"


def persist_links(context: Context, provider: str | None, batch_id: str | None) -> dict[str, str]:
    """Store both extra links of the running task instance as XCom; return what was stored.

    ``batch_id``: the current batch (None before the first submission: only the tokentier
    view is stored then). Base URLs come from ``[tokentier] anthropic_console_url`` /
    ``openai_console_url`` and ``[api] base_url``. The keys are those of
    `~airflow_provider_tokentier.links.ProviderBatchLink` / `TokentierViewLink`.
    """
    ti = context["ti"]
    stored = {
        VIEW_LINK_KEY: task_instance_view_url(
            api_base_url(), ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1)
        )
    }
    if provider and batch_id:
        url = provider_batch_url(provider, batch_id, console_url(provider))
        if url:
            stored[PROVIDER_BATCH_LINK_KEY] = url
    for key, url in stored.items():
        ti.xcom_push(key=key, value=url)
    return stored
