"""What `BatchSensor` and `TieredInferenceOperator` share: one step of waiting on a batch workload.

A step does everything possible now -- harvest ended batches, start the next round, drain at
the deadline, land -- and returns either the batches to wait on (the caller defers or pokes
again) or the landed results manifest. All of it is re-read from the task's state on every
step, so it resumes correctly after a deferral, a retry, a clear or a triggerer restart.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.backends import batch_backend
from airflow_provider_tokentier.backends.base import (
    BatchBackend,
    BatchStatus,
    call_with_retry,
    is_transient_error,
)
from airflow_provider_tokentier.core.chain_plan import parse_iso
from airflow_provider_tokentier.core.errors import InvalidArgumentError
from airflow_provider_tokentier.core.routing import estimate_rescue_margin_s
from airflow_provider_tokentier.exceptions import (
    BatchPollError,
    BatchStuckError,
    BatchWaitTimeoutError,
    PartialResultsError,
)
from airflow_provider_tokentier.hooks.base import async_client_factory, provider_hook
from airflow_provider_tokentier.runtime.arguments import ArgumentChecks
from airflow_provider_tokentier.runtime.assets import emit_results_event
from airflow_provider_tokentier.runtime.dag_stages import remaining_chain_warning
from airflow_provider_tokentier.runtime.reporting import StepReporter
from airflow_provider_tokentier.runtime.settings import progress_parts
from airflow_provider_tokentier.state.history import TurnaroundStore
from airflow_provider_tokentier.state.row_heads import iter_row_heads
from airflow_provider_tokentier.triggers.batch import BatchTrigger
from airflow_provider_tokentier.workflow.gate import REBATCH_POLICIES, BatchGate
from airflow_provider_tokentier.workflow.submission import SubmittedBatch
from airflow_provider_tokentier.workflow.sync_run import land_on_sync_tier

if TYPE_CHECKING:
    from airflow.sdk.types import Logger


_T = TypeVar("_T")

#: The tiers a deadline rescue can move unfinished requests to.
RESCUE_TIERS = (None, "flex", "standard")

#: Output tokens per request assumed when sizing a rescue margin from request bytes alone.
RESCUE_OUTPUT_TOKENS_GUESS = 512


def raise_for_partial(manifest: Mapping[str, Any], *, fail_on_partial: bool) -> None:
    """Fail the task, after its rows landed, when a request did not succeed and it should.

    ``fail_on_partial`` set: the one rule of every operator that lands rows.

    The message counts the outcomes and quotes the first error, so a run where everything
    failed (a wrong key, an unreachable host) says why without opening the results.
    """
    counts = manifest["counts"]
    not_ok = manifest["total"] - counts["succeeded"]
    if not not_ok or not fail_on_partial:
        return
    total = manifest["total"]
    summary = (
        f"none of the {total} requests succeeded"
        if not counts["succeeded"]
        else f"{not_ok} of {total} requests did not succeed"
    )
    first = first_error(manifest["results_uri"])
    raise PartialResultsError(
        f"{summary} ({counts})"
        + (f"; first error: {first}" if first else "")
        + f". The rows landed at {manifest['results_uri']}. Set fail_on_partial=False to accept "
        "partial results."
    )


def first_error(results_uri: str) -> str | None:
    """``type: message`` of the first landed row that has an error, or None."""
    for _line, head in iter_row_heads(ObjectStoragePath(results_uri)):
        if head.error:
            message = str(head.error.get("message") or "")[:300].rstrip(".")
            return f"{head.custom_id}: {head.error.get('type')}: {message}"
    return None


class BatchWaitMixin:
    """The waiting half of a batch workload, for operators that hold these attributes."""

    if TYPE_CHECKING:
        log: Logger
        conn_id: str | None
        deadline: datetime.datetime | datetime.timedelta | str | None
        max_rounds: int
        fail_on_partial: bool
        results_uri: str | None
        state_root: str | None
        poll_interval: float
        stuck_after: float | None
        progress_every: float
        rescue_tier: str | None
        rescue_margin: float | None
        results_asset: Any
        max_cost_usd: float | None
        poll_error_patience: float
        prices: Any

    def _check_wait_arguments(self, check: ArgumentChecks, provider: str | None) -> None:
        """The waiting arguments `BatchSensor` and `TieredInferenceOperator` share."""
        if TYPE_CHECKING:
            assert isinstance(self, BatchWaitMixin)
        check.one_of("rebatch", getattr(self, "rebatch", "none"), REBATCH_POLICIES)
        check.number("max_rounds", self.max_rounds, minimum=1, inclusive=True, integer=True)
        check.seconds("poll_interval", self.poll_interval)
        check.seconds("stuck_after", self.stuck_after, optional=True)
        check.seconds("progress_every", self.progress_every, allow_zero=True)
        check.seconds("poll_error_patience", self.poll_error_patience)
        check.one_of("rescue_tier", self.rescue_tier, RESCUE_TIERS)
        if self.rescue_tier == "flex" and provider == "anthropic":
            raise InvalidArgumentError("rescue_tier", "'flex' needs OpenAI; Anthropic has no flex tier")
        check.seconds("rescue_margin", self.rescue_margin, optional=True, allow_zero=True)
        check.deadline(self.deadline)
        check.prices(self.prices)
        check.flag("fail_on_partial", self.fail_on_partial)
        for name in ("conn_id", "results_uri", "state_root"):
            check.text(name, getattr(self, name))

    def _conn_id(self, gate: BatchGate) -> str | None:
        return self.conn_id or gate.manifest.get("conn_id")

    def _deadline_at(self, gate: BatchGate) -> float | None:
        """The absolute deadline, fixed in state at the first run (deferrals restart timeouts)."""
        stored = gate.ledger.read("deadline")
        if stored is not None:
            at: float | None = stored["at"]
            return at
        at = resolve_deadline(self.deadline, gate.manifest.get("submitted_at"))
        gate.ledger.write("deadline", {"at": at})
        warning = remaining_chain_warning(self, at, time.time())
        if warning:
            self.log.warning(warning)
        return at

    def _rescue_at(self, gate: BatchGate, deadline: float | None) -> float | None:
        """When to give up on the batch tier and rescue the rest: the deadline minus a margin.

        The margin (``rescue_margin``, else estimated from the workload size, the rescue tier's
        throughput and the provider's cancel latency) is fixed in state at the first run.
        """
        if deadline is None or self.rescue_tier is None:
            return None
        if (gate.ledger.read("budget-stop") or {}).get("stopped") == "rescue":
            return None
        if self.rescue_tier == "flex" and gate.settings.provider != "openai":
            raise ValueError(f"rescue_tier='flex' needs OpenAI; {gate.settings.provider} has no flex tier")
        stored = gate.ledger.read("rescue")
        if stored is None:
            margin = self.rescue_margin
            if margin is None:
                total = int(gate.manifest.get("total") or 1)
                request_bytes = sum(b.bytes for b in gate.batches_of(0))
                margin = estimate_rescue_margin_s(
                    gate.settings.provider,
                    total,
                    max(1, request_bytes // max(total, 1) // 4),
                    RESCUE_OUTPUT_TOKENS_GUESS,
                    rescue_tier=self.rescue_tier,
                )
            stored = {"margin_s": margin, "tier": self.rescue_tier}
            gate.ledger.write("rescue", stored)
            self.log.info(
                "Deadline rescue: unfinished requests move to %s at %s (%.0fs before the deadline)",
                self.rescue_tier,
                iso(deadline - margin),
                margin,
            )
        return deadline - float(stored["margin_s"])

    def _run_rescue(self, gate: BatchGate, round_: int, report: StepReporter) -> None:
        ids = gate.rescue_candidates(round_)
        if not ids or self.rescue_tier is None:
            return
        provider = gate.settings.provider
        tier = self.rescue_tier
        if not gate.within_budget("rescue", tier, gate.batches_of(round_), ids):
            return
        self._report(gate, report, "rescuing", rescue_state="running", rescue_requests=len(ids))
        report.open_round(round_ + 1, self.max_rounds, f"deadline rescue of {len(ids)} request(s) on {tier}")
        self.log.warning("Deadline rescue: running %d request(s) on the %s tier", len(ids), tier)

        cap = gate.budget_cap()
        left = None if cap is None else max(cap - gate.spent_usd(), 0.0)

        def land(rows: Iterator[dict[str, Any]], target: ObjectStoragePath) -> Any:
            progress_dir = gate.state_dir / f"rescue-r{round_ + 1:02d}"
            return land_on_sync_tier(
                rows,
                target,
                progress_dir,
                provider=provider,
                tier=tier,
                client=async_client_factory(provider, self._conn_id(gate)),
                log=self.log,
                total=len(ids),
                round_=round_ + 1,
                deadline=self._deadline_at(gate),
                endpoint=gate.manifest.get("endpoint"),
                prices=gate.settings.prices,
                **progress_parts(),
                max_cost_usd=left,
            )

        gate.rescue(round_ + 1, ids, tier, land)

    def _turnaround(self, gate: BatchGate) -> tuple[float, float] | None:
        """The (p50, p95) batch turnaround of this provider/model, for the expected finish."""
        model = gate.manifest.get("model")
        if not model:
            return None
        history = TurnaroundStore.from_state_root(self.state_root).load(gate.settings.provider, str(model))
        return history.p50(), history.p95()

    def _report(
        self,
        gate: BatchGate,
        report: StepReporter,
        phase: str,
        statuses: dict[str, BatchStatus] | None = None,
        *,
        rescue_state: str | None = None,
        rescue_requests: int | None = None,
    ) -> None:
        """Publish the progress record and the links of this step."""
        deadline = self._deadline_at(gate)
        rescue_at = self._rescue_at(gate, deadline)
        rescue = None
        if rescue_at is not None:
            state = rescue_state or ("done" if gate.is_rescue_round(gate.current_round()) else "planned")
            rescue = {
                "tier": self.rescue_tier,
                "state": state,
                "at": iso(rescue_at),
                "requests": rescue_requests,
            }
        report.batch_step(
            gate,
            phase,
            max_rounds=self.max_rounds,
            statuses=statuses,
            deadline=deadline,
            rescue=rescue,
            turnaround=report.memo("turnaround", lambda: self._turnaround(gate)),
        )

    def _advance(self, gate: BatchGate, report: StepReporter) -> list[SubmittedBatch] | dict[str, Any]:
        """Do everything possible now; return the batches to wait on, or the landed manifest.

        The progress record and the links are published before returning batches to wait on
        (the caller then defers or ends the poke), and at every re-batch, rescue and landing.
        """
        try:
            return self._advance_rounds(gate, report)
        except BaseException:
            report.close_round()  # the traceback belongs outside the round's folded group
            raise

    def _may_rebatch(self, gate: BatchGate, round_: int, ids: set[str]) -> bool:
        """Whether ``ids`` of ``round_`` go to another round: some need it, rounds and budget allow it."""
        if not ids:
            return False
        if round_ + 1 >= self.max_rounds:
            self.log.warning(
                "%d request(s) still need another round, but max_rounds=%d is reached",
                len(ids),
                self.max_rounds,
            )
            return False
        return gate.within_budget("rebatch", "batch", gate.batches_of(round_), ids)

    def _rescue_affordable(self, gate: BatchGate, waiting: list[SubmittedBatch]) -> bool:
        """Whether a rescue of everything still waiting fits the spend cap (checked before cancelling)."""
        if not waiting or gate.ledger.read("draining") is not None:
            return True
        return gate.within_budget("rescue", str(self.rescue_tier), waiting, None)

    def _advance_rounds(self, gate: BatchGate, report: StepReporter) -> list[SubmittedBatch] | dict[str, Any]:
        deadline = self._deadline_at(gate)
        rescue_at = self._rescue_at(gate, deadline)
        landed = gate.ledger.read("landed")
        if landed is not None:
            self.log.info(
                "Results already landed for this task instance; re-landing them without provider calls"
            )
            report.final_errors = gate.final_errors()
            return gate.land(self.results_uri, deadline=iso(deadline), finished_at=landed.get("finished_at"))
        provider = gate.settings.provider
        backend = batch_backend(provider, provider_hook(provider, self._conn_id(gate)).get_client())
        gate.fix_budget_cap(getattr(self, "max_cost_usd", None))
        round_ = gate.current_round()
        if not report.group_open:
            batches = gate.batches_of(round_)
            report.open_round(
                round_,
                self.max_rounds,
                f"{sum(b.requests for b in batches)} request(s) in {len(batches)} batch(es)",
            )
        while True:
            statuses, waiting = _poll_round(gate, backend, round_)
            now = time.time()
            past_deadline = deadline is not None and now >= deadline
            rescue_due = rescue_at is not None and now >= rescue_at
            if rescue_due and not self._rescue_affordable(gate, waiting):
                rescue_at, rescue_due = None, False
            if waiting:
                if (rescue_due or past_deadline) and gate.ledger.read("draining") is None:
                    self._start_draining(gate, backend, waiting, rescue_at if rescue_due else None, deadline)
                self._report(gate, report, "waiting", statuses)
                return waiting
            draining = gate.ledger.read("draining")
            if rescue_due or (draining is not None and draining.get("rescue")):
                if not gate.is_rescue_round(round_):
                    self._run_rescue(gate, round_, report)
                break
            if past_deadline or draining is not None:
                break
            ids = gate.rebatch_candidates(round_)
            if not self._may_rebatch(gate, round_, ids):
                break
            round_ += 1
            self._report(gate, report, "rebatching", statuses)
            report.open_round(round_, self.max_rounds, f"re-batching {len(ids)} request(s)")
            gate.submit_round(round_, ids, backend, gate.manifest.get("endpoint"))
        self._report(gate, report, "landing", statuses)
        report.final_errors = gate.final_errors()
        return gate.land(self.results_uri, deadline=iso(deadline))

    def _start_draining(
        self,
        gate: BatchGate,
        backend: BatchBackend,
        waiting: list[SubmittedBatch],
        rescue_at: float | None,
        deadline: float | None,
    ) -> None:
        """Cancel the unfinished batches at the rescue time (``rescue_at`` given) or the deadline.

        The ``draining`` record says which; a rescue then runs what did not finish on
        ``rescue_tier``, a plain drain lands what finished.
        """
        if rescue_at is not None:
            self.log.warning(
                "Rescue time %s reached with %d batch(es) unfinished: cancelling them, then "
                "running what did not finish on %s",
                iso(rescue_at),
                len(waiting),
                self.rescue_tier,
            )
            record: dict[str, Any] = {"rescue": self.rescue_tier}
        else:
            self.log.warning(
                "Deadline %s passed with %d batch(es) unfinished: cancelling them and landing what finished",
                iso(deadline),
                len(waiting),
            )
            record = {}
        at = time.time()
        for batch in waiting:
            _patiently(backend.cancel, batch.id)
        gate.ledger.write("draining", {"at": at, "batches": [b.id for b in waiting], **record})

    def _wait_trigger(
        self,
        gate: BatchGate,
        waiting: list[SubmittedBatch],
        report: StepReporter,
        timeout_at: float | None = None,
    ) -> BatchTrigger:
        draining = gate.ledger.read("draining") is not None
        deadline = self._deadline_at(gate)
        wake_at = self._rescue_at(gate, deadline) or deadline
        record = report.last
        return BatchTrigger(
            provider=gate.settings.provider,
            conn_id=self._conn_id(gate),
            batch_ids=[b.id for b in waiting],
            poll_interval=self.poll_interval,
            deadline=None if draining else wake_at,
            stuck_after=self.stuck_after,
            progress_every=self.progress_every,
            round_=gate.current_round(),
            max_rounds=self.max_rounds,
            started_at=parse_iso(gate.manifest["submitted_at"]).timestamp()
            if gate.manifest.get("submitted_at")
            else None,
            expected_finish=record.expected_finish if record else None,
            cost_so_far_usd=record.cost_usd if record else None,
            timeout_at=timeout_at,
            poll_error_patience=self.poll_error_patience,
        )

    def _defer_wait(
        self, context: Any, gate: BatchGate, waiting: list[SubmittedBatch], report: StepReporter
    ) -> NoReturn:
        """Hand the wait to the triggerer, bounded by the wait timeout (in the trigger and in Airflow)."""
        timeout_at = self._wait_timeout_at(context, gate)
        remaining = None if timeout_at is None else timeout_at - time.time()
        if remaining is not None and remaining <= 0:
            raise BatchWaitTimeoutError(
                f"timed out waiting for {gate.settings.provider} batches {[b.id for b in waiting]} "
                f"({self._wait_timeout_name}={self._wait_timeout_s():.0f}s); the batches keep running "
                "at the provider"
            )
        trigger = self._wait_trigger(gate, waiting, report, timeout_at)
        # Airflow ends the wait itself if the trigger cannot (a triggerer that is down); the
        # grace lets the trigger's own, more telling timeout event come first.
        airflow_timeout = (
            None
            if remaining is None
            else datetime.timedelta(seconds=remaining + max(60.0, 2 * self.poll_interval))
        )
        self.defer(trigger=trigger, method_name="execute_complete", timeout=airflow_timeout)  # type: ignore[attr-defined]
        raise AssertionError("defer() returned")  # pragma: no cover - defer always raises

    #: How the wait timeout is called in messages: ``timeout`` on the sensor.
    _wait_timeout_name = "timeout"

    def _wait_timeout_s(self) -> float | None:
        """Seconds the whole wait may take within one try (None: unbounded)."""
        value = getattr(self, self._wait_timeout_name, None)
        return None if value is None else float(value)

    def _wait_timeout_at(self, context: Any, gate: BatchGate) -> float | None:
        """When the wait times out: its start in this try plus the timeout.

        The start is kept in state, so deferrals and triggerer restarts do not restart it; a
        retry or a clear does.
        """
        timeout = self._wait_timeout_s()
        if timeout is None:
            return None
        key = f"wait-started-try{int(getattr(context['ti'], 'try_number', 0) or 0)}"
        started = gate.ledger.read(key)
        if started is None:
            started = {"at": time.time()}
            gate.ledger.write(key, started)
        return float(started["at"]) + timeout

    def _finish(self, manifest: dict[str, Any], report: StepReporter) -> dict[str, Any]:
        """Log the summary, publish the final record and the asset event, apply ``fail_on_partial``."""
        manifest["counts"]
        report.summary(manifest)
        report.landed(manifest)
        emit_results_event(report.context, self.results_asset, manifest)
        self._record_turnaround(manifest)
        raise_for_partial(manifest, fail_on_partial=self.fail_on_partial)
        return manifest

    def _record_turnaround(self, manifest: dict[str, Any]) -> None:
        # History feeds the router's p95; a re-landing is de-duplicated by the store.
        if not (manifest.get("model") and manifest.get("submitted_at") and manifest["tiers"].get("batch")):
            return
        store = TurnaroundStore.from_state_root(self.state_root)
        seconds = store.record_manifest(manifest)
        if seconds is not None:
            self.log.info(
                "Recorded a %.0fs batch turnaround for %s/%s",
                seconds,
                manifest["provider"],
                manifest["model"],
            )

    def _check_event(self, event: dict[str, Any] | None, gate: BatchGate, report: StepReporter) -> None:
        """Turn a trigger's error, stuck or timeout event into a task failure; other events resume.

        A failure is published as the ``failed`` phase before it is raised.
        """
        event = event or {}
        status = event.get("status")
        if status not in ("error", "stuck", "timeout"):
            return
        report.close_round()
        statuses = {b["batch_id"]: BatchStatus.from_dict(b) for b in event.get("batches") or []}
        self._report(gate, report, "failed", statuses)
        if status == "error":
            raise BatchPollError(
                str(event.get("message") or f"polling {event.get('provider')} batches failed")
            )
        if status == "stuck":
            raise BatchStuckError(event.get("message", "a batch is stuck"))
        if status == "timeout":
            raise BatchWaitTimeoutError(event.get("message", "timed out waiting for the batches"))


#: Attempts for a worker-side status check or cancel that meets transient errors (~15 s in all):
#: the trigger already rode out the outage it saw; a blip right after it fired must not fail the task.
STATUS_CALL_ATTEMPTS = 7


def _patiently(call: Callable[[str], _T], batch_id: str) -> _T:
    return call_with_retry(
        lambda: call(batch_id),
        is_transient=is_transient_error,
        what=f"{getattr(call, '__name__', 'call')} {batch_id}",
        attempts=STATUS_CALL_ATTEMPTS,
    )


def _poll_round(
    gate: BatchGate, backend: BatchBackend, round_: int
) -> tuple[dict[str, BatchStatus], list[SubmittedBatch]]:
    """Poll the round's batches not harvested yet and harvest those that ended.

    Returns every polled batch's status and the batches still running.
    """
    pending = [b for b in gate.batches_of(round_) if not gate.is_harvested(b)]
    statuses: dict[str, BatchStatus] = {b.id: _patiently(backend.retrieve, b.id) for b in pending}
    for batch in pending:
        if statuses[batch.id].ended:
            gate.harvest(batch, statuses[batch.id], backend)
    return statuses, [b for b in pending if not statuses[b.id].ended]


def resolve_deadline(
    deadline: datetime.datetime | datetime.timedelta | str | None, submitted_at: str | None
) -> float | None:
    """Absolute unix time of ``deadline``; a timedelta counts from ``submitted_at`` (else now)."""
    if deadline is None:
        return None
    if isinstance(deadline, datetime.timedelta):
        start = parse_iso(submitted_at).timestamp() if submitted_at else time.time()
        return start + deadline.total_seconds()
    if isinstance(deadline, str):
        return parse_iso(deadline).timestamp()
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=datetime.timezone.utc)
    return deadline.timestamp()


def iso(at: float | None) -> str | None:
    """ISO 8601 UTC string of a unix time (None stays None)."""
    return None if at is None else datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat()
