"""`TieredInferenceOperator`: ask the router, then run the workload on the tier it picked."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from airflow.sdk import Asset, AssetAlias, BaseOperator, Context

from airflow_provider_tokentier.core.budget import check_max_cost
from airflow_provider_tokentier.core.chunking import DEFAULT_SAFETY_MARGIN
from airflow_provider_tokentier.core.errors import InvalidArgumentError
from airflow_provider_tokentier.core.progress import ProgressRecord
from airflow_provider_tokentier.core.requests import iter_validated
from airflow_provider_tokentier.core.result_rows import TIERS
from airflow_provider_tokentier.core.routing import (
    DEFAULT_MIN_BATCH_SAVINGS_USD,
    choose_tier,
    parse_duration,
    profile_from_requests,
)
from airflow_provider_tokentier.hooks.base import async_client_factory
from airflow_provider_tokentier.links import ProviderBatchLink, TokentierViewLink
from airflow_provider_tokentier.runtime.arguments import ArgumentChecks
from airflow_provider_tokentier.runtime.assets import declare_results_asset
from airflow_provider_tokentier.runtime.batch_submit import submit_workload
from airflow_provider_tokentier.runtime.dag_stages import TIERED_ROLE
from airflow_provider_tokentier.runtime.reporting import StepReporter
from airflow_provider_tokentier.runtime.settings import progress_parts, resolve_price_table
from airflow_provider_tokentier.runtime.task_state import state_dir_for, task_key
from airflow_provider_tokentier.runtime.waiting import BatchWaitMixin, iso, resolve_deadline
from airflow_provider_tokentier.state.history import TurnaroundStore
from airflow_provider_tokentier.state.ledger import Ledger, storage_path
from airflow_provider_tokentier.triggers.batch import DEFAULT_POLL_ERROR_PATIENCE_S
from airflow_provider_tokentier.workflow.gate import BatchGate, GateSettings
from airflow_provider_tokentier.workflow.submission import open_request_rows
from airflow_provider_tokentier.workflow.sync_run import land_on_sync_tier

#: How long the batch wait may take by default: a sensor's default ``timeout`` (7 days).
DEFAULT_WAIT_TIMEOUT_S = 7 * 24 * 3600.0

#: The budget a forced tier is described with when none is given: the 24 h batch window.
FORCED_TIER_BUDGET_S = 24 * 3600.0


class TieredInferenceOperator(BatchWaitMixin, BaseOperator):
    """Run an LLM workload on the cheapest tier whose turnaround it can tolerate.

    The router (`airflow_provider_tokentier.core.routing.choose_tier`) weighs the latency
    budget or deadline, the volume and token estimates, caching, the batch stages still ahead
    and the observed batch turnaround of this provider/model, and picks ``standard``, ``flex``
    or ``batch``; the decision and its reasons go to the task log and the returned manifest.
    Flex and standard run in the worker; batch submits retry-safely and waits in the
    triggerer, re-batching and rescuing exactly like `BatchSensor`. Either way it returns the
    same results manifest (plus ``decision``). The decision is stored with the task's state, so
    a retry keeps the tier it started on.

    :param provider: ``"anthropic"`` or ``"openai"``.
    :param requests: request rows (list or XCom), as for `BatchSubmitOperator`; or
    :param requests_uri: a JSONL file of rows on any ObjectStoragePath URI (streamed).
    :param conn_id: connection id (default ``anthropic_default`` / ``openai_default``).
    :param endpoint: OpenAI endpoint for rows without ``url``.
    :param model: default model for rows without one.
    :param latency_budget: how long the output may take: a timedelta, seconds, or ``"500ms"``,
        ``"15m"``, ``"8h"``, ``"2d"``. Also the deadline of the batch wait when no ``deadline``.
    :param deadline: when the output is needed: datetime, ISO string, or timedelta from now.
    :param interactive: a human or an agent loop waits on the output (forces standard).
    :param cached_input_ratio: share of input tokens cached on the synchronous path (0..1).
    :param chained_batch_stages: batch stages from this one to the consumer, this one included.
    :param min_batch_savings_usd: below this expected saving, batch is not worth its latency.
    :param output_tokens_per_request: output estimate (default: the rows' ``max_tokens``).
    :param tier: force a tier (``"standard"``, ``"flex"``, ``"batch"``), overriding the router.
    :param rescue_tier: batch path only: ``"flex"`` or ``"standard"`` to finish before the deadline.
    :param rescue_margin: seconds (or a timedelta) before the deadline to start the rescue.
    :param rebatch: batch path: ``"expired"``, ``"expired+retryable"`` or ``"none"``.
    :param max_rounds: batch path: rounds including the first submission (3).
    :param fail_on_partial: fail (after landing the rows) when any request did not succeed (True).
    :param poll_interval: batch path: seconds between polls (60).
    :param stuck_after: batch path: seconds before a non-moving batch fails the task (6 h).
    :param progress_every: batch path: seconds between progress log lines (300).
    :param wait_timeout: batch path: seconds (or a timedelta) the batch wait may take in one try
        (7 days, as a sensor's default ``timeout``); passed to the deferral, after it the task
        fails with `BatchWaitTimeoutError`. None: no limit beyond ``deadline``.
    :param poll_error_patience: batch path: seconds of consecutive transient poll errors to ride
        out before failing with `BatchPollError` (3600).
    :param max_concurrency: flex/standard: requests in flight at once (16).
    :param flex_patience: flex: seconds to keep retrying "resource unavailable" before falling
        back to standard (per request).
    :param max_requests_per_batch: batch cap override (as `BatchSubmitOperator`).
    :param max_bytes_per_batch: batch cap override.
    :param results_uri: where rows land (default ``results.jsonl`` in the task's state dir).
    :param state_root: as for `BatchSubmitOperator`.
    :param prices: price overrides (dict, JSON string or path).
    :param results_asset: an ``Asset`` to update when the rows land, or an ``AssetAlias`` for
        the asset named by the landed ``results_uri`` (event ``extra``: what landed and its cost).
    :param max_cost_usd: spend cap in USD (default None). Batch path: a workload estimated
        above it is refused before submitting, and no re-batch round or rescue starts that would
        cross it. Flex/standard: requests stop at the cap and the rest land ``skipped_budget``.
    """

    template_fields: Sequence[str] = (
        "requests",
        "requests_uri",
        "model",
        "endpoint",
        "deadline",
        "results_uri",
        "state_root",
    )
    ui_color = "#f5e6d5"
    #: How chain planning (:mod:`~airflow_provider_tokentier.runtime.dag_stages`) sees this task.
    batch_stage_role: ClassVar[str] = TIERED_ROLE
    operator_extra_links = (ProviderBatchLink(), TokentierViewLink())
    _wait_timeout_name = "wait_timeout"

    def __init__(  # noqa: PLR0915 -- argument checks: helper harden-b makes them one shared set
        self,
        *,
        provider: str,
        requests: Any = None,
        requests_uri: str | None = None,
        conn_id: str | None = None,
        endpoint: str | None = None,
        model: str | None = None,
        latency_budget: datetime.timedelta | float | str | None = None,
        deadline: datetime.datetime | datetime.timedelta | str | None = None,
        interactive: bool = False,
        cached_input_ratio: float = 0.0,
        chained_batch_stages: int = 1,
        min_batch_savings_usd: float = DEFAULT_MIN_BATCH_SAVINGS_USD,
        output_tokens_per_request: int | None = None,
        tier: str | None = None,
        rescue_tier: str | None = None,
        rescue_margin: datetime.timedelta | float | None = None,
        rebatch: str = "expired",
        max_rounds: int = 3,
        fail_on_partial: bool = True,
        poll_interval: float = 60.0,
        stuck_after: float | None = 6 * 3600.0,
        progress_every: float = 300.0,
        wait_timeout: datetime.timedelta | float | None = DEFAULT_WAIT_TIMEOUT_S,
        poll_error_patience: float = DEFAULT_POLL_ERROR_PATIENCE_S,
        max_concurrency: int = 16,
        flex_patience: float | None = None,
        max_requests_per_batch: int | None = None,
        max_bytes_per_batch: int | None = None,
        results_uri: str | None = None,
        state_root: str | None = None,
        prices: Any = None,
        results_asset: Asset | AssetAlias | None = None,
        max_cost_usd: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_cost_usd = check_max_cost(max_cost_usd)
        check = ArgumentChecks(rendered=False)
        if tier is not None:
            check.one_of("tier", tier, TIERS)
        if tier == "flex" and provider != "openai":
            raise InvalidArgumentError("tier", "'flex' needs OpenAI; Anthropic has no flex tier")
        check.fraction("cached_input_ratio", cached_input_ratio)
        check.number("chained_batch_stages", chained_batch_stages, minimum=1, inclusive=True, integer=True)
        check.number("min_batch_savings_usd", min_batch_savings_usd, inclusive=True)
        check.number("output_tokens_per_request", output_tokens_per_request, integer=True, optional=True)
        check.flag("interactive", interactive)
        check.number("max_concurrency", max_concurrency, minimum=1, inclusive=True, integer=True)
        check.seconds("flex_patience", flex_patience, optional=True, allow_zero=True)
        check.seconds("wait_timeout", wait_timeout, optional=True)
        for cap, value in (
            ("max_requests_per_batch", max_requests_per_batch),
            ("max_bytes_per_batch", max_bytes_per_batch),
        ):
            check.number(cap, value, minimum=1, inclusive=True, integer=True, optional=True)
        budget = (
            latency_budget.total_seconds()
            if isinstance(latency_budget, datetime.timedelta)
            else latency_budget
        )
        try:
            self.latency_budget_s = None if budget is None else parse_duration(budget)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError("latency_budget", str(exc)) from None
        if self.latency_budget_s is not None and self.latency_budget_s <= 0:
            raise InvalidArgumentError("latency_budget", f"must be positive, got {latency_budget!r}")
        if isinstance(deadline, datetime.datetime):
            resolved = resolve_deadline(deadline, None)
            if resolved is not None and resolved <= time.time():
                raise InvalidArgumentError("deadline", f"{deadline} is already in the past")
        if isinstance(rescue_margin, datetime.timedelta):
            rescue_margin = rescue_margin.total_seconds()
        self.provider = provider
        self.requests = requests
        self.requests_uri = requests_uri
        self.conn_id = conn_id
        self.endpoint = endpoint if provider == "openai" else None
        self.model = model
        self.deadline = deadline
        self.interactive = interactive
        self.cached_input_ratio = cached_input_ratio
        self.chained_batch_stages = chained_batch_stages
        self.min_batch_savings_usd = min_batch_savings_usd
        self.output_tokens_per_request = output_tokens_per_request
        self.tier = tier
        self.rescue_tier = rescue_tier
        self.rescue_margin = rescue_margin
        self.rebatch = rebatch
        self.max_rounds = max_rounds
        self.fail_on_partial = fail_on_partial
        self.poll_interval = poll_interval
        self.stuck_after = stuck_after
        self.progress_every = progress_every
        self.wait_timeout = (
            wait_timeout.total_seconds() if isinstance(wait_timeout, datetime.timedelta) else wait_timeout
        )
        self.poll_error_patience = poll_error_patience
        self.max_concurrency = max_concurrency
        self.flex_patience = flex_patience
        self.caps = {"max_requests": max_requests_per_batch, "max_bytes": max_bytes_per_batch}
        self.results_uri = results_uri
        self.state_root = state_root
        self.prices = prices
        self.results_asset = results_asset
        declare_results_asset(self, results_asset)
        self._check_arguments(check)

    def _check_arguments(self, check: ArgumentChecks) -> None:
        """Parse time: every argument but unrendered templates; run time: the rendered ones too."""
        check.workload(self.provider, self.requests, self.requests_uri, self.endpoint)
        check.text("model", self.model)
        self._check_wait_arguments(check, self.provider)

    # -- rows ----------------------------------------------------------------------------------
    def _open_rows(self) -> Iterable[Mapping[str, Any]]:
        return open_request_rows(self.requests, self.requests_uri)

    def _validated(self) -> Iterable[dict[str, Any]]:
        return iter_validated(
            self._open_rows(), self.provider, endpoint=self.endpoint, default_model=self.model
        )

    # -- decision ------------------------------------------------------------------------------
    def _decide(self, ledger: Ledger) -> dict[str, Any]:
        """Route once per task instance: a retry keeps the tier it started on."""
        stored = ledger.read("decision")
        if stored is not None:
            return stored
        now = datetime.datetime.now(datetime.timezone.utc)
        deadline_at = resolve_deadline(self.deadline, now.isoformat())
        if deadline_at is None and self.latency_budget_s is not None:
            deadline_at = now.timestamp() + self.latency_budget_s
        if deadline_at is not None and deadline_at <= now.timestamp():
            raise ValueError(f"deadline {iso(deadline_at)} is already in the past")
        budget_s = self.latency_budget_s
        if self.tier is not None and budget_s is None and deadline_at is None and not self.interactive:
            # A forced tier needs no budget, but the profile still describes one: the batch window.
            budget_s = FORCED_TIER_BUDGET_S
        first = next(iter(self._validated()), None)
        if first is None:
            raise ValueError("the workload has no requests")
        # Validation fills a missing model from `model`, so every validated row names one.
        model = str((first.get("params") or first.get("body") or {})["model"])
        profile = profile_from_requests(
            self._validated(),  # a full validation pass: a bad row fails here, before any paid call
            provider=self.provider,
            model=model,
            output_tokens_per_request=self.output_tokens_per_request,
            latency_budget_s=budget_s,
            deadline=None
            if deadline_at is None
            else datetime.datetime.fromtimestamp(deadline_at, datetime.timezone.utc),
            interactive=self.interactive,
            cached_input_ratio=self.cached_input_ratio,
            chained_batch_stages=self.chained_batch_stages,
            min_batch_savings_usd=self.min_batch_savings_usd,
            concurrency=self.max_concurrency,
        )
        history = TurnaroundStore.from_state_root(self.state_root).load(self.provider, model)
        decision = choose_tier(
            profile,
            history=history,
            prices=resolve_price_table(self.prices),
            now=now,
            rescue_margin_s=self.rescue_margin,
            force_tier=self.tier,
        ).to_dict()
        ledger.write("decision", decision)
        ledger.write("deadline", {"at": deadline_at})
        return decision

    # -- Airflow entry points ---------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        """Route the workload (or use the stored decision) and run it; return the results manifest."""
        self._check_arguments(ArgumentChecks(rendered=True))
        return self._step(context, resumed=False)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume the batch path after the trigger fired; everything is re-read from state."""
        return self._step(context, resumed=True, event=event)

    def _step(self, context: Context, *, resumed: bool, event: dict[str, Any] | None = None) -> Any:
        state_dir = state_dir_for(context, self.state_root)
        ledger = Ledger(state_dir)
        fresh = ledger.read("decision") is None
        decision = self._decide(ledger)
        if fresh:
            self.log.info("Router chose %s: %s", decision["tier"].upper(), " ".join(decision["reasons"]))
            self.log.info("Estimated cost per tier: %s", decision["estimated_cost_usd"])
        report = StepReporter(
            context, operator=type(self).__name__, log=self.log, resumed=resumed, decision=decision
        )
        if decision["tier"] == "batch":
            return self._run_batch(context, ledger, report, event)
        manifest = self._run_on_sync_tier(context, decision["tier"], report)
        return self._finish({**manifest, "decision": decision}, report)

    def _run_batch(
        self, context: Context, ledger: Ledger, report: StepReporter, event: dict[str, Any] | None
    ) -> Any:
        decision = report.decision
        submission = ledger.read("submission")
        if submission is None:
            report.publish(
                ProgressRecord(
                    operator=report.operator,
                    provider=self.provider,
                    model=self.model or (decision or {}).get("model"),
                    tier="batch",
                    phase="submitting",
                    decision=decision,
                    round=1,
                    max_rounds=self.max_rounds,
                )
            )
            submission = submit_workload(
                context,
                self._open_rows,
                provider=self.provider,
                conn_id=self.conn_id,
                endpoint=self.endpoint,
                model=self.model,
                state_root=self.state_root,
                caps=self.caps,
                safety_margin=DEFAULT_SAFETY_MARGIN,
                log=self.log,
                max_cost_usd=self.max_cost_usd,
                prices=self.prices,
            )
            ledger.write("submission", submission)
        gate = BatchGate(
            manifest=submission,
            state_dir=ledger.state_dir,
            settings=GateSettings(
                provider=self.provider,
                rebatch=self.rebatch,
                max_rounds=self.max_rounds,
                prices=resolve_price_table(self.prices),
                caps=self.caps,
            ),
            task_key=task_key(context),
        )
        if event is not None:
            self._check_event(event, gate, report)
        outcome = self._advance(gate, report)
        if isinstance(outcome, dict):
            return self._finish({**outcome, "decision": decision}, report)
        self._defer_wait(context, gate, outcome, report)

    def _run_on_sync_tier(self, context: Context, tier: str, report: StepReporter) -> dict[str, Any]:
        target = (
            storage_path(self.results_uri)
            if self.results_uri
            else state_dir_for(context, self.state_root) / "results.jsonl"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {"max_concurrency": self.max_concurrency}
        if self.flex_patience is not None:
            options["flex_patience"] = self.flex_patience
        return land_on_sync_tier(
            self._validated(),
            target,
            state_dir_for(context, self.state_root),
            provider=self.provider,
            tier=tier,
            client=async_client_factory(self.provider, self.conn_id),
            log=self.log,
            endpoint=self.endpoint,
            prices=resolve_price_table(self.prices),
            on_progress=report.sync_progress(
                provider=self.provider,
                tier=tier,
                total=None,
                model=self.model or (report.decision or {}).get("model"),
            ),
            **progress_parts(),
            max_cost_usd=self.max_cost_usd,
            **options,
        )
