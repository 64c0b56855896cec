"""`FlexOperator`: run OpenAI requests on the flex tier inside the worker."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from airflow_provider_tokentier.backends.sync_tiers import (
    DEFAULT_FLEX_PATIENCE_S,
    FLEX_REQUEST_TIMEOUT_S,
    NON_FLEX_POLICIES,
    ON_UNAVAILABLE_POLICIES,
)
from airflow_provider_tokentier.operators.sync_tier import SyncTierOperator
from airflow_provider_tokentier.runtime.arguments import ArgumentChecks


class FlexOperator(SyncTierOperator):
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
    :param conn_id: Airflow connection id (default ``openai_default``); without such a
        connection the SDK's environment variables apply.
    :param endpoint: endpoint for rows without ``url``: ``/v1/chat/completions`` or
        ``/v1/responses`` offer flex (others run per ``non_flex_model``). Inferred from the
        first row when omitted. Templated.
    :param flex_patience: seconds per request to keep retrying flex capacity refusals
        (default 300).
    :param on_unavailable: after ``flex_patience``: ``"standard"`` (default) runs the request at
        list price; ``"fail"`` lands it errored with a retryable ``resource_unavailable`` error.
    :param non_flex_model: for a model or endpoint without flex: ``"standard"`` (default) runs it
        on standard; ``"error"`` fails the task before any call when that is known up front
        (endpoint, ``flex_models``), else lands ``flex_not_available`` errored rows.
    :param flex_models: models known to offer flex (a model outside it is non-flex before any
        call); default None learns it from the API's answer.
    :param request_timeout: seconds per HTTP call (default 900, as OpenAI recommends for flex).
    """

    tier = "flex"
    ui_color = "#f5ecd5"

    def __init__(
        self,
        *,
        flex_patience: float = DEFAULT_FLEX_PATIENCE_S,
        on_unavailable: str = "standard",
        non_flex_model: str = "standard",
        flex_models: Collection[str] | None = None,
        request_timeout: float = FLEX_REQUEST_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(provider="openai", request_timeout=request_timeout, **kwargs)
        self.flex_patience = flex_patience
        self.on_unavailable = on_unavailable
        self.non_flex_model = non_flex_model
        self.flex_models = None if flex_models is None else list(flex_models)
        self._check_tier_options(ArgumentChecks(rendered=False))

    def _check_tier_options(self, check: ArgumentChecks) -> None:
        check.seconds("flex_patience", self.flex_patience, allow_zero=True)
        check.one_of("on_unavailable", self.on_unavailable, ON_UNAVAILABLE_POLICIES)
        check.one_of("non_flex_model", self.non_flex_model, NON_FLEX_POLICIES)

    def _executor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "flex_patience": self.flex_patience,
            "on_unavailable": self.on_unavailable,
            "non_flex_model": self.non_flex_model,
        }
        if self.flex_models is not None:
            options["flex_models"] = self.flex_models
        return options


__all__ = ["FlexOperator"]
