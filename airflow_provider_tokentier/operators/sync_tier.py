"""`SyncTierOperator`: what `FlexOperator` and `StandardOperator` share.

Thin Airflow glue over :mod:`airflow_provider_tokentier.backends.sync_tiers`: the rows are
validated in a first streaming pass (a bad row fails the task before any paid call), then
streamed through the executor, and the result rows land as JSONL at ``results_uri`` (default:
``results.jsonl`` in the task's state directory). Both return the same results manifest as
`BatchSensor`, so downstream tasks read results the same way whatever tier ran them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseOperator, Context

from airflow_provider_tokentier.backends.sync_tiers import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PROGRESS_EVERY,
    ResultTally,
)
from airflow_provider_tokentier.core.budget import check_max_cost
from airflow_provider_tokentier.core.errors import InvalidArgumentError
from airflow_provider_tokentier.core.pricing import PriceTable
from airflow_provider_tokentier.core.requests import iter_validated
from airflow_provider_tokentier.hooks.base import async_client_factory
from airflow_provider_tokentier.runtime.arguments import ArgumentChecks
from airflow_provider_tokentier.runtime.assets import declare_results_asset, emit_results_event
from airflow_provider_tokentier.runtime.reporting import StepReporter
from airflow_provider_tokentier.runtime.settings import progress_parts, resolve_price_table
from airflow_provider_tokentier.runtime.task_state import state_dir_for
from airflow_provider_tokentier.runtime.waiting import raise_for_partial
from airflow_provider_tokentier.state.ledger import storage_path
from airflow_provider_tokentier.workflow.submission import open_request_rows
from airflow_provider_tokentier.workflow.sync_run import land_on_sync_tier

#: The parameters both sync tiers take alike, appended to each one's docstring.
SHARED_PARAMS_DOC = """\
    :param requests_uri: a JSONL file of request rows on any ObjectStoragePath URI; streamed
        twice (validation, then the run), never loaded whole. Templated.
    :param model: default model for rows that do not name one. Templated.
    :param max_concurrency: requests in progress at once, back-off waits included (default 16).
    :param max_attempts: calls per request on 408/409/429/5xx and connection errors (default 4).
    :param results_uri: where to land the result rows (default: ``results.jsonl`` in the task's
        state directory). Templated.
    :param state_root: root of the task state directories (default ``[tokentier] state_root``,
        else ``$AIRFLOW_HOME/tokentier``); any ObjectStoragePath URI. Templated.
    :param progress_every: log a progress line every this many rows (default 100; 0: never).
    :param progress_part_rows: finished rows are kept in numbered part objects of at most this
        many rows (default ``[tokentier] progress_part_rows``, else 1000): a worker killed
        mid-run loses, and the retry pays again, at most one part.
    :param progress_part_seconds: a part is written at the latest this many seconds after its
        first row finished (default ``[tokentier] progress_part_seconds``, else 60).
    :param prices: price overrides (dict, JSON string or path) for cost accounting, on top
        of the built-in table and ``[tokentier] prices``.
    :param results_asset: an ``Asset`` to update when the rows land, or an ``AssetAlias`` for
        the asset named by the landed ``results_uri`` (event ``extra``: what landed and its cost).
    :param max_cost_usd: spend cap in USD (default None: no cap). A request starts only while
        its estimate (standard prices, its own output cap) fits beside what was spent and what
        is in flight; from the first that does not, the rest land ``skipped_budget`` unsent.
    :param fail_on_partial: fail the task (after landing the rows) when any request did not
        succeed (default True); False succeeds and reports the counts in the manifest.
"""


class SyncTierOperator(BaseOperator):
    """What `FlexOperator` and `StandardOperator` share; see their docstrings.

    A subclass with options of its own passes them to the executor through
    `_executor_options` and checks them in `_check_tier_options`. Its docstring documents what
    is its own; `SHARED_PARAMS_DOC` is appended to it.
    """

    template_fields: Sequence[str] = (
        "requests",
        "requests_uri",
        "model",
        "endpoint",
        "results_uri",
        "state_root",
    )

    tier: str = "standard"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__:
            cls.__doc__ = cls.__doc__.rstrip() + "\n" + SHARED_PARAMS_DOC

    def __init__(
        self,
        *,
        provider: str,
        requests: Any = None,
        requests_uri: str | None = None,
        conn_id: str | None = None,
        endpoint: str | None = None,
        model: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        request_timeout: float | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        results_uri: str | None = None,
        state_root: str | None = None,
        progress_every: int = DEFAULT_PROGRESS_EVERY,
        progress_part_rows: int | None = None,
        progress_part_seconds: float | None = None,
        prices: Any = None,
        fail_on_partial: bool = True,
        results_asset: Asset | AssetAlias | None = None,
        max_cost_usd: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_cost_usd = check_max_cost(max_cost_usd)
        self.provider = provider
        self.requests = requests
        self.requests_uri = requests_uri
        self.conn_id = conn_id
        self.endpoint = endpoint if provider == "openai" else None
        self.model = model
        self.max_concurrency = max_concurrency
        self.request_timeout = request_timeout
        self.max_attempts = max_attempts
        self.results_uri = results_uri
        self.state_root = state_root
        self.progress_every = progress_every
        self.progress_part_rows = progress_part_rows
        self.progress_part_seconds = progress_part_seconds
        self.prices = prices
        self.fail_on_partial = fail_on_partial
        self.results_asset = results_asset
        declare_results_asset(self, results_asset)
        self._check_arguments(ArgumentChecks(rendered=False))

    def _check_arguments(self, check: ArgumentChecks) -> None:
        """Parse time: every argument but unrendered templates; run time: the rendered ones too."""
        check.workload(self.provider, self.requests, self.requests_uri, self.endpoint)
        if self.tier == "flex" and self.provider != "openai":
            raise InvalidArgumentError("provider", "the flex tier is OpenAI only; use StandardOperator")
        for name in ("conn_id", "model", "results_uri", "state_root"):
            check.text(name, getattr(self, name))
        check.number("max_concurrency", self.max_concurrency, minimum=1, inclusive=True, integer=True)
        check.number("max_attempts", self.max_attempts, minimum=1, inclusive=True, integer=True)
        check.seconds("request_timeout", self.request_timeout, optional=True)
        check.number("progress_every", self.progress_every, inclusive=True, integer=True)
        check.number(
            "progress_part_rows",
            self.progress_part_rows,
            minimum=1,
            inclusive=True,
            integer=True,
            optional=True,
        )
        check.seconds("progress_part_seconds", self.progress_part_seconds, optional=True)
        check.prices(self.prices)
        check.flag("fail_on_partial", self.fail_on_partial)

    def _check_tier_options(self, check: ArgumentChecks) -> None:
        """Check the tier's own options (the standard tier has none)."""

    def _executor_options(self) -> dict[str, Any]:
        """The tier's own options, as keyword arguments of the executor (the standard tier has none)."""
        return {}

    # -- rows ----------------------------------------------------------------------------------
    def _open_rows(self) -> Iterable[Mapping[str, Any]]:
        return open_request_rows(self.requests, self.requests_uri)

    def _validated(self, endpoint: str | None) -> Iterator[dict[str, Any]]:
        return iter_validated(self._open_rows(), self.provider, endpoint=endpoint, default_model=self.model)

    def _validate_all(self) -> tuple[int, str | None]:
        """First pass: every row checked, nothing kept but the count and the workload endpoint."""
        total, endpoint = 0, self.endpoint
        for row in self._validated(self.endpoint):
            total += 1
            endpoint = endpoint or row.get("url")
        return total, endpoint

    # -- run -----------------------------------------------------------------------------------
    def _price_table(self) -> PriceTable:
        return resolve_price_table(self.prices)

    def execute(self, context: Context) -> dict[str, Any]:
        """Validate every row, run them on this tier and land them; return the results manifest."""
        report = StepReporter(context, operator=type(self).__name__, log=self.log, links=False)
        check = ArgumentChecks(rendered=True)
        self._check_arguments(check)
        self._check_tier_options(check)
        prices = self._price_table()  # a bad override fails here, before any paid call
        total, endpoint = self._validate_all()
        self.log.info("Validated %d %s requests for the %s tier", total, self.provider, self.tier)
        target = (
            storage_path(self.results_uri)
            if self.results_uri
            else state_dir_for(context, self.state_root) / "results.jsonl"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        if total == 0:
            with target.open("wb"):
                pass
            empty = ResultTally().manifest(
                results_uri=str(target), provider=self.provider, model=self.model, submitted_at=None
            )
            report.summary(empty)
            report.landed(empty)
            emit_results_event(context, self.results_asset, empty)
            return empty

        manifest = land_on_sync_tier(
            self._validated(endpoint),
            target,
            state_dir_for(context, self.state_root),
            provider=self.provider,
            tier=self.tier,
            client=async_client_factory(self.provider, self.conn_id),
            log=self.log,
            progress_every=self.progress_every,
            **progress_parts(self.progress_part_rows, self.progress_part_seconds),
            total=total,
            endpoint=endpoint,
            max_concurrency=self.max_concurrency,
            request_timeout=self.request_timeout,
            max_attempts=self.max_attempts,
            prices=prices,
            on_progress=report.sync_progress(
                provider=self.provider, tier=self.tier, total=total, model=self.model
            ),
            max_cost_usd=self.max_cost_usd,
            **self._executor_options(),
        )
        report.summary(manifest)
        report.landed(manifest)
        emit_results_event(context, self.results_asset, manifest)
        raise_for_partial(manifest, fail_on_partial=self.fail_on_partial)
        return manifest


__all__ = ["SyncTierOperator"]
