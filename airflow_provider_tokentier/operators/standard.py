"""`StandardOperator`: run Anthropic or OpenAI requests on the standard tier inside the worker."""

from __future__ import annotations

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
    :param conn_id: Airflow connection id (default ``anthropic_default`` / ``openai_default``);
        without such a connection the SDK's environment variables apply.
    :param endpoint: OpenAI endpoint for rows without ``url``; inferred from the first row when
        omitted. Ignored for Anthropic. Templated.
    :param request_timeout: seconds per HTTP call (default 600).
    """

    tier = "standard"
    ui_color = "#d5f5e3"


__all__ = ["StandardOperator"]
