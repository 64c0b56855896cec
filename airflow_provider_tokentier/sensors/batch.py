"""`BatchSensor`: wait for a workload's batches, re-batch expiries, land one row per request."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from airflow.sdk import Asset, AssetAlias, BaseSensorOperator, Context, PokeReturnValue

from airflow_provider_tokentier.core.budget import check_max_cost
from airflow_provider_tokentier.core.chunking import DEFAULT_SAFETY_MARGIN
from airflow_provider_tokentier.core.errors import InvalidArgumentError
from airflow_provider_tokentier.core.requests import PROVIDERS
from airflow_provider_tokentier.exceptions import BatchStuckError, PartialResultsError
from airflow_provider_tokentier.links import ProviderBatchLink, TokentierViewLink
from airflow_provider_tokentier.runtime.arguments import ArgumentChecks
from airflow_provider_tokentier.runtime.assets import declare_results_asset
from airflow_provider_tokentier.runtime.dag_stages import WAIT_ROLE
from airflow_provider_tokentier.runtime.reporting import StepReporter
from airflow_provider_tokentier.runtime.settings import resolve_price_table
from airflow_provider_tokentier.runtime.task_state import state_dir_for, task_key
from airflow_provider_tokentier.runtime.waiting import BatchWaitMixin
from airflow_provider_tokentier.triggers.batch import DEFAULT_POLL_ERROR_PATIENCE_S
from airflow_provider_tokentier.workflow.gate import REBATCH_POLICIES, BatchGate, GateSettings

__all__ = ["BatchSensor", "BatchStuckError", "PartialResultsError"]


class BatchSensor(BatchWaitMixin, BaseSensorOperator):
    """Gate downstream tasks until every request of a batch workload has a result row.

    Waits in the triggerer (deferrable, the default) or by rescheduling. When the batches of a
    round end it harvests every request's outcome -- including the finished work inside expired
    and cancelled OpenAI batches -- and re-batches exactly the requests that need it, up to
    ``max_rounds`` and never past ``deadline``. Then it lands one JSONL row per input request
    at ``results_uri`` and returns the results manifest (read rows with
    ``airflow_provider_tokentier.results.read_results``).

    :param submission: the submission manifest of a `BatchSubmitOperator` (its ``.output``, or
        a dict). Or give ``provider`` + ``batch_ids`` for batches submitted elsewhere.
    :param provider: ``"anthropic"`` or ``"openai"`` (only with ``batch_ids``).
    :param batch_ids: ids of batches submitted outside tokentier (no re-batching possible).
    :param conn_id: connection id; default: the submission's, else the provider's default.
    :param deadline: when results must have landed: a datetime, an ISO 8601 string, or a
        timedelta counted from the submission. No new round starts past it; outstanding
        batches are then cancelled and their partial output harvested. Stored in state at the
        first run, so it survives deferrals, retries and triggerer restarts.
    :param rebatch: which outcomes get another round: ``"expired"`` (default: expired and
        missing results), ``"expired+retryable"`` (also errors the provider marks retryable),
        or ``"none"``.
    :param max_rounds: total rounds including the first submission (default 3).
    :param fail_on_partial: fail the task (after landing the rows) when any request did not
        succeed (default True); False succeeds and reports the counts in the manifest.
    :param results_uri: where to land the rows (default: ``results.jsonl`` in the state dir).
    :param state_root: as for `BatchSubmitOperator`.
    :param poll_interval: seconds between status polls (default 60).
    :param stuck_after: seconds a batch may stay finalizing/canceling or show no progress
        before the task fails as stuck (default 6 h; None disables).
    :param progress_every: seconds between progress lines in the task log (default 300).
    :param prices: price overrides (dict, JSON string or path) for cost accounting.
    :param rescue_tier: ``"flex"`` (OpenAI) or ``"standard"``: when the deadline comes within
        ``rescue_margin``, cancel the outstanding batches, harvest their partial output and run
        only the remaining requests on this tier, so every row lands before the deadline.
        None (default) just stops at the deadline.
    :param rescue_margin: seconds (or a timedelta) before the deadline to start the rescue;
        default: estimated from the request count, the rescue tier's throughput and the
        provider's cancel latency.
    :param results_asset: an ``Asset`` to update when the rows land, or an ``AssetAlias`` to
        add an event for the asset named by the landed ``results_uri``; the event's ``extra``
        carries results URI, counts, rounds, tiers, cost, standard cost and savings.
    :param max_cost_usd: spend cap in USD for the whole wait (default: the submission's own
        ``max_cost_usd``). A re-batch round or a deadline rescue whose estimate would take the
        spend so far past it is not started; the rows keep their status and the manifest's
        ``budget`` says what the cap stopped.
    :param poll_error_patience: seconds of consecutive transient poll errors (429, 5xx,
        connection errors) the deferred wait rides out before it fails with `BatchPollError`
        naming the provider, the batches and the last error (default 3600).
    :param deferrable: wait in the triggerer (default True) or reschedule between pokes.
    :param timeout: (Airflow's sensor argument) seconds the wait may take in one try; passed to
        the deferral too, so the triggerer ends a deferred wait with `BatchWaitTimeoutError`.
    """

    template_fields: Sequence[str] = ("submission", "batch_ids", "deadline", "results_uri", "state_root")
    ui_color = "#d5e8f5"
    #: How chain planning (:mod:`~airflow_provider_tokentier.runtime.dag_stages`) sees this task.
    batch_stage_role: ClassVar[str] = WAIT_ROLE
    operator_extra_links = (ProviderBatchLink(), TokentierViewLink())

    def __init__(
        self,
        *,
        submission: Any = None,
        provider: str | None = None,
        batch_ids: list[str] | None = None,
        conn_id: str | None = None,
        deadline: datetime.datetime | datetime.timedelta | str | None = None,
        rebatch: str = "expired",
        max_rounds: int = 3,
        fail_on_partial: bool = True,
        results_uri: str | None = None,
        state_root: str | None = None,
        poll_interval: float = 60.0,
        stuck_after: float | None = 6 * 3600.0,
        progress_every: float = 300.0,
        prices: Any = None,
        rescue_tier: str | None = None,
        rescue_margin: datetime.timedelta | float | None = None,
        results_asset: Asset | AssetAlias | None = None,
        poll_error_patience: float = DEFAULT_POLL_ERROR_PATIENCE_S,
        deferrable: bool = True,
        max_cost_usd: float | None = None,
        **kwargs: Any,
    ) -> None:
        if not deferrable:
            kwargs.setdefault("mode", "reschedule")
        # Checked before Airflow sees it as poke_interval, so the error names poll_interval.
        ArgumentChecks(rendered=False).seconds("poll_interval", poll_interval)
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        if isinstance(rescue_margin, datetime.timedelta):
            rescue_margin = rescue_margin.total_seconds()
        self.submission = submission
        self.provider = provider
        self.batch_ids = batch_ids
        self.conn_id = conn_id
        self.deadline = deadline
        self.rebatch = rebatch if batch_ids is None else "none"
        self.max_rounds = max_rounds
        self.fail_on_partial = fail_on_partial
        self.results_uri = results_uri
        self.state_root = state_root
        self.poll_interval = poll_interval
        self.stuck_after = stuck_after
        self.progress_every = progress_every
        self.prices = prices
        self.rescue_tier = rescue_tier
        self.rescue_margin = rescue_margin
        self.poll_error_patience = poll_error_patience
        self.deferrable = deferrable
        self.results_asset = results_asset
        declare_results_asset(self, results_asset)
        self.max_cost_usd = check_max_cost(max_cost_usd)
        ArgumentChecks(rendered=False).one_of("rebatch", rebatch, REBATCH_POLICIES)
        self._check_arguments(ArgumentChecks(rendered=False))

    def _check_arguments(self, check: ArgumentChecks) -> None:
        """Parse time: every argument but unrendered templates; run time: the rendered ones too."""
        if (self.submission is None) == (self.batch_ids is None):
            raise InvalidArgumentError(
                "submission", "give `submission` (a BatchSubmitOperator's output) or `provider` + `batch_ids`"
            )
        if self.batch_ids is not None:
            check.one_of("provider", self.provider, PROVIDERS)
            check.batch_ids(self.batch_ids)
        self._check_wait_arguments(check, self.provider)

    # -- set-up --------------------------------------------------------------------------------
    def _manifest(self) -> Mapping[str, Any]:
        if self.submission is not None:
            if not isinstance(self.submission, Mapping) or "batches" not in self.submission:
                raise InvalidArgumentError(
                    "submission",
                    f"must be a BatchSubmitOperator manifest, got {type(self.submission).__name__}",
                )
            return self.submission
        return {
            "provider": self.provider,
            "conn_id": self.conn_id,
            "batches": [
                {"id": b, "round": 0, "chunk": i, "requests": 0, "bytes": 0, "uri": None}
                for i, b in enumerate(self.batch_ids or [])
            ],
            "submitted_at": None,
        }

    def _gate(self, context: Context) -> BatchGate:
        manifest = self._manifest()
        prices = resolve_price_table(self.prices)
        settings = GateSettings(
            provider=manifest["provider"],
            rebatch=self.rebatch,
            max_rounds=self.max_rounds,
            prices=prices,
            caps=manifest.get("caps"),
            safety_margin=manifest.get("safety_margin", DEFAULT_SAFETY_MARGIN),
        )
        return BatchGate(
            manifest=manifest,
            state_dir=state_dir_for(context, self.state_root),
            settings=settings,
            task_key=task_key(context),
        )

    # -- Airflow entry points ---------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        """Take one waiting step, then defer to the trigger (or poke again) until the results land."""
        self._check_arguments(ArgumentChecks(rendered=True))
        if not self.deferrable:
            return super().execute(context)
        return self._step(context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired; everything needed is re-read from state."""
        report = StepReporter(context, operator=type(self).__name__, log=self.log, resumed=True)
        gate = self._gate(context)
        self._check_event(event, gate, report)
        return self._step(context, report, gate)

    def _step(
        self, context: Context, report: StepReporter | None = None, gate: BatchGate | None = None
    ) -> Any:
        report = report or StepReporter(context, operator=type(self).__name__, log=self.log)
        gate = gate or self._gate(context)
        outcome = self._advance(gate, report)
        if isinstance(outcome, dict):
            return self._finish(outcome, report)
        self._defer_wait(context, gate, outcome, report)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One waiting step in poke/reschedule mode; done when the results landed."""
        self._check_arguments(ArgumentChecks(rendered=True))
        report = StepReporter(context, operator=type(self).__name__, log=self.log)
        gate = self._gate(context)
        outcome = self._advance(gate, report)
        if isinstance(outcome, dict):
            return PokeReturnValue(is_done=True, xcom_value=self._finish(outcome, report))
        report.close_round()  # the next poke is a new process: it opens the round's group again
        return False
