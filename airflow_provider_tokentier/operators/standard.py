"""`StandardOperator`: run Anthropic or OpenAI requests on the standard tier inside the worker."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias

from airflow_provider_tokentier.backends.sync_tiers import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PROGRESS_EVERY,
)
from airflow_provider_tokentier.operators.sync_tier import SyncTierOperator


class StandardOperator(SyncTierOperator):
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
        progress_part_rows: int | None = None,
        progress_part_seconds: float | None = None,
        prices: Any = None,
        results_asset: Asset | AssetAlias | None = None,
        max_cost_usd: float | None = None,
        fail_on_partial: bool = True,
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
            progress_part_rows=progress_part_rows,
            progress_part_seconds=progress_part_seconds,
            prices=prices,
            results_asset=results_asset,
            max_cost_usd=max_cost_usd,
            fail_on_partial=fail_on_partial,
            **kwargs,
        )


__all__ = ["StandardOperator"]
