"""Anthropic hook: connection -> `anthropic.Anthropic` / `anthropic.AsyncAnthropic`."""

from __future__ import annotations

from typing import Any

import anthropic
from airflow.sdk import Connection

from airflow_provider_tokentier.hooks.base import ASYNC_POOL_LIMITS, ProviderHook


class TokentierAnthropicHook(ProviderHook[anthropic.Anthropic, anthropic.AsyncAnthropic]):
    """Builds official Anthropic SDK clients from an Airflow connection.

    :param conn_id: connection id (default ``anthropic_default``); password = API key,
        host = base URL (optional), extra ``anthropic_version`` (optional).
    :param max_retries: the SDK's own retry count (SDK default when None).
    :param timeout: request timeout in seconds (SDK default when None).
    """

    provider = "anthropic"
    api_key_env = "ANTHROPIC_API_KEY"
    default_conn_name = "anthropic_default"
    conn_type = "tokentier_anthropic"
    hook_name = "Anthropic (tokentier)"

    def options_from_connection(self, conn: Connection) -> dict[str, Any]:
        """SDK options from the connection, plus the ``anthropic_version`` extra."""
        options = super().options_from_connection(conn)
        version = (conn.extra_dejson or {}).get("anthropic_version")
        if version:
            options["default_headers"] = {"anthropic-version": version}
        return options

    def normalize_base_url(self, host: str) -> str:
        """The base URL without a trailing slash or ``/v1`` (the SDK adds it)."""
        # The Anthropic SDK appends /v1/... itself; accept a base URL given with /v1 too.
        return host.rstrip("/").removesuffix("/v1")

    def build_client(self, options: dict[str, Any]) -> anthropic.Anthropic:
        """A sync ``anthropic.Anthropic`` client."""
        return anthropic.Anthropic(**options)

    def build_async_client(self, options: dict[str, Any]) -> anthropic.AsyncAnthropic:
        """An async ``anthropic.AsyncAnthropic`` client on the shared connection pool."""
        return anthropic.AsyncAnthropic(
            http_client=anthropic.DefaultAsyncHttpxClient(limits=ASYNC_POOL_LIMITS), **options
        )

    def probe(self) -> None:
        """One cheap authenticated call: list a single message batch."""
        self.get_client().messages.batches.list(limit=1)
