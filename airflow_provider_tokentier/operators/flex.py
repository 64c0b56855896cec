"""`FlexOperator` and `StandardOperator`: run a workload on a synchronous tier inside the worker.

Thin Airflow glue over :mod:`airflow_provider_tokentier.backends.interactive`: the rows are
validated in a first streaming pass (a bad row fails the task before any paid call), then
streamed through the executor, and the result rows land as JSONL at ``results_uri`` (default:
``results.jsonl`` in the task's state directory). Both return the same results manifest as
`BatchSensor`, so downstream tasks read results the same way whatever tier ran them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_tokentier.backends.interactive import (
    DEFAULT_FLEX_PATIENCE_S,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PROGRESS_EVERY,
    FLEX_REQUEST_TIMEOUT_S,
    ResultTally,
    check_interactive_options,
)
from airflow_provider_tokentier.config import resolve_price_table
from airflow_provider_tokentier.core.pricing import PriceTable
from airflow_provider_tokentier.core.requests import iter_validated
from airflow_provider_tokentier.taskstate import state_dir_for
from airflow_provider_tokentier.workflow.submission import check_workload_arguments, open_request_rows
from airflow_provider_tokentier.workflow.sync_tier import land_on_sync_tier


class _SyncTierOperator(BaseOperator):
    """What `FlexOperator` and `StandardOperator` share; see their docstrings."""

    template_fields: Sequence[str] = (
        "requests",
        "requests_uri",
        "model",
        "endpoint",
        "results_uri",
        "state_root",
    )

    tier: str = "standard"

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
        prices: Any = None,
        executor_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        options = dict(executor_options or {})
        check_interactive_options(
            provider=provider,
            tier=self.tier,
            max_concurrency=max_concurrency,
            request_timeout=request_timeout,
            max_attempts=max_attempts,
            **options,
        )
        check_workload_arguments(provider, requests, requests_uri, endpoint)
        if progress_every < 0:
            raise ValueError(f"progress_every must not be negative, got {progress_every!r}")
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
        self.prices = prices
        self._executor_options = options

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

    def execute(self, context: Any) -> dict[str, Any]:
        total, endpoint = self._validate_all()
        self.log.info("Validated %d %s requests for the %s tier", total, self.provider, self.tier)
        target = (
            ObjectStoragePath(self.results_uri)
            if self.results_uri
            else state_dir_for(context, self.state_root) / "results.jsonl"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        if total == 0:
            with target.open("wb"):
                pass
            return ResultTally().manifest(
                results_uri=str(target), provider=self.provider, model=self.model, submitted_at=None
            )

        manifest = land_on_sync_tier(
            self._validated(endpoint),
            target,
            state_dir_for(context, self.state_root),
            provider=self.provider,
            tier=self.tier,
            conn_id=self.conn_id,
            log=self.log,
            progress_every=self.progress_every,
            total=total,
            endpoint=endpoint,
            max_concurrency=self.max_concurrency,
            request_timeout=self.request_timeout,
            max_attempts=self.max_attempts,
            prices=self._price_table(),
            **self._executor_options,
        )
        # The executor logged the summary (counts per status and tier, cost, savings, wire stats).
        self.log.info("Landed %d rows at %s", manifest["total"], manifest["results_uri"])
        return manifest


class FlexOperator(_SyncTierOperator):
    """Run OpenAI requests on the flex tier (``service_tier="flex"``, batch prices) in the worker.

    Every row is validated before anything is sent. Requests then run with bounded concurrency
    through the async OpenAI SDK with its own retries off; a 429 "resource unavailable" is
    retried with jittered exponential back-off (honouring ``retry-after``) for up to
    ``flex_patience`` seconds per request, after which the request falls back to the standard
    tier or lands errored, by ``on_unavailable``. Each row records the tier the API actually
    served (the echoed ``service_tier``) and is priced at it. Returns the results manifest
    (same keys as `BatchSensor`'s; ``tiers`` tells how many rows ran on flex vs standard).

    :param requests: OpenAI request rows ``{"custom_id", "method", "url", "body"}`` (``method``/
        ``url`` may be omitted), as a list or an XCom. Give this or ``requests_uri``. Templated.
    :param requests_uri: a JSONL file of request rows on any ObjectStoragePath URI; streamed
        twice (validation, then the run), never loaded whole. Templated.
    :param conn_id: Airflow connection id (default ``openai_default``); without such a
        connection the SDK's environment variables apply.
    :param endpoint: endpoint for rows without ``url``: ``/v1/chat/completions`` or
        ``/v1/responses`` offer flex (others run per ``non_flex_model``). Inferred from the
        first row when omitted. Templated.
    :param model: default model for rows that do not name one. Templated.
    :param flex_patience: seconds per request to keep retrying flex capacity refusals
        (default 300).
    :param on_unavailable: after ``flex_patience``: ``"standard"`` (default) runs the request at
        list price; ``"fail"`` lands it errored with a retryable ``resource_unavailable`` error.
    :param non_flex_model: for a model or endpoint without flex: ``"standard"`` (default) runs it
        on standard; ``"error"`` fails the task before any call when that is known up front
        (endpoint, ``flex_models``), else lands ``flex_not_available`` errored rows.
    :param flex_models: models known to offer flex (a model outside it is non-flex before any
        call); default None learns it from the API's answer.
    :param max_concurrency: requests in progress at once, back-off waits included (default 16).
    :param request_timeout: seconds per HTTP call (default 900, as OpenAI recommends for flex).
    :param max_attempts: calls per request on 408/409/429/5xx and connection errors (default 4).
    :param results_uri: where to land the result rows (default: ``results.jsonl`` in the task's
        state directory). Templated.
    :param state_root: root of the task state directories (default ``[tokentier] state_root``,
        else ``$AIRFLOW_HOME/tokentier``); any ObjectStoragePath URI. Templated.
    :param progress_every: log a progress line every this many rows (default 100; 0: never).
    :param prices: price overrides (dict, JSON string or path) for cost accounting, on top
        of the built-in table and ``[tokentier] prices``.
    """

    tier = "flex"
    ui_color = "#f5ecd5"

    def __init__(
        self,
        *,
        requests: Any = None,
        requests_uri: str | None = None,
        conn_id: str | None = None,
        endpoint: str | None = None,
        model: str | None = None,
        flex_patience: float = DEFAULT_FLEX_PATIENCE_S,
        on_unavailable: str = "standard",
        non_flex_model: str = "standard",
        flex_models: Collection[str] | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        request_timeout: float = FLEX_REQUEST_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        results_uri: str | None = None,
        state_root: str | None = None,
        progress_every: int = DEFAULT_PROGRESS_EVERY,
        prices: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            provider="openai",
            requests=requests,
            requests_uri=requests_uri,
            conn_id=conn_id,
            endpoint=endpoint,
            model=model,
            max_concurrency=max_concurrency,
            request_timeout=request_timeout,
            max_attempts=max_attempts,
            results_uri=results_uri,
            state_root=state_root,
            progress_every=progress_every,
            prices=prices,
            executor_options={
                "flex_patience": flex_patience,
                "on_unavailable": on_unavailable,
                "non_flex_model": non_flex_model,
            },
            **kwargs,
        )
        self.flex_patience = flex_patience
        self.on_unavailable = on_unavailable
        self.non_flex_model = non_flex_model
        self.flex_models = None if flex_models is None else list(flex_models)
        if self.flex_models is not None:
            self._executor_options["flex_models"] = self.flex_models


class StandardOperator(_SyncTierOperator):
    """Run Anthropic or OpenAI requests on the standard (list-price) tier in the worker.

    Every row is validated before anything is sent; requests then run with bounded concurrency
    through the provider's async SDK with its own retries off: 408/409/429/5xx and connection
    errors are retried with jittered exponential back-off (honouring ``retry-after``) up to
    ``max_attempts`` calls, other 4xx land as errored rows. Returns the results manifest (same
    keys as `BatchSensor`'s).

    :param provider: ``"anthropic"`` or ``"openai"``.
    :param requests: request rows, provider-native: Anthropic ``{"custom_id", "params"}``;
        OpenAI ``{"custom_id", "method", "url", "body"}`` (``method``/``url`` may be omitted).
        A list or an XCom. Give this or ``requests_uri``. Templated.
    :param requests_uri: a JSONL file of request rows on any ObjectStoragePath URI; streamed
        twice (validation, then the run), never loaded whole. Templated.
    :param conn_id: Airflow connection id (default ``anthropic_default`` / ``openai_default``);
        without such a connection the SDK's environment variables apply.
    :param endpoint: OpenAI endpoint for rows without ``url``; inferred from the first row when
        omitted. Ignored for Anthropic. Templated.
    :param model: default model for rows that do not name one. Templated.
    :param max_concurrency: requests in progress at once, back-off waits included (default 16).
    :param request_timeout: seconds per HTTP call (default 600).
    :param max_attempts: calls per request on 408/409/429/5xx and connection errors (default 4).
    :param results_uri: where to land the result rows (default: ``results.jsonl`` in the task's
        state directory). Templated.
    :param state_root: root of the task state directories (default ``[tokentier] state_root``,
        else ``$AIRFLOW_HOME/tokentier``); any ObjectStoragePath URI. Templated.
    :param progress_every: log a progress line every this many rows (default 100; 0: never).
    :param prices: price overrides (dict, JSON string or path) for cost accounting, on top
        of the built-in table and ``[tokentier] prices``.
    """

    tier = "standard"
    ui_color = "#d5f5e3"

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
        prices: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            provider=provider,
            requests=requests,
            requests_uri=requests_uri,
            conn_id=conn_id,
            endpoint=endpoint,
            model=model,
            max_concurrency=max_concurrency,
            request_timeout=request_timeout,
            max_attempts=max_attempts,
            results_uri=results_uri,
            state_root=state_root,
            progress_every=progress_every,
            prices=prices,
            **kwargs,
        )


__all__ = ["FlexOperator", "StandardOperator"]
