"""OpenAI hook: connection -> `openai.OpenAI` / `openai.AsyncOpenAI`."""

from __future__ import annotations

from typing import Any

import openai
from airflow.sdk import Connection

from airflow_provider_tokentier.hooks.base import ASYNC_POOL_LIMITS, ProviderHook


class TokentierOpenAIHook(ProviderHook[openai.OpenAI, openai.AsyncOpenAI]):
    """Builds official OpenAI SDK clients from an Airflow connection.

    :param conn_id: connection id (default ``openai_default``); password = API key,
        host = base URL (optional; ``/v1`` is added when missing), extras ``organization``
        and ``project`` (optional; the official provider's ``openai_client_kwargs`` extra is
        honoured as well).
    :param max_retries: the SDK's own retry count (SDK default when None).
    :param timeout: request timeout in seconds (SDK default when None).
    """

    provider = "openai"
    api_key_env = "OPENAI_API_KEY"
    default_conn_name = "openai_default"
    conn_type = "tokentier_openai"
    hook_name = "OpenAI (tokentier)"

    def options_from_connection(self, conn: Connection) -> dict[str, Any]:
        """SDK options from the connection, plus the ``organization``/``project`` extras."""
        options = super().options_from_connection(conn)
        extra = conn.extra_dejson or {}
        for key in ("organization", "project"):
            if extra.get(key):
                options[key] = extra[key]
        client_kwargs = extra.get("openai_client_kwargs") or {}
        for key in ("organization", "project", "timeout", "max_retries"):
            if key in client_kwargs and key not in options:
                options[key] = client_kwargs[key]
        return options

    def normalize_base_url(self, host: str) -> str:
        """The base URL ending in ``/v1``, as the OpenAI SDK expects."""
        host = host.rstrip("/")
        return host if host.endswith("/v1") else f"{host}/v1"

    def build_client(self, options: dict[str, Any]) -> openai.OpenAI:
        """A sync ``openai.OpenAI`` client."""
        return openai.OpenAI(**options)

    def build_async_client(self, options: dict[str, Any]) -> openai.AsyncOpenAI:
        """An async ``openai.AsyncOpenAI`` client on the shared connection pool."""
        return openai.AsyncOpenAI(
            http_client=openai.DefaultAsyncHttpxClient(limits=ASYNC_POOL_LIMITS), **options
        )

    def probe(self) -> None:
        """One cheap authenticated call: list a single batch."""
        self.get_client().batches.list(limit=1)
