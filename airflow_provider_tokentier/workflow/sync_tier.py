"""Run validated request rows on the flex or standard tier in the worker (shared by the operators
and the deadline rescue)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import IO, Any

from airflow_provider_tokentier.backends.interactive import run_interactive
from airflow_provider_tokentier.hooks.base import provider_hook


def run_on_sync_tier(
    rows: Iterable[Mapping[str, Any]],
    out: IO[bytes],
    *,
    provider: str,
    tier: str,
    conn_id: str | None,
    log: Any,
    **executor_options: Any,
) -> dict[str, Any]:
    """Run validated ``rows`` on flex or standard in this worker, writing result rows to ``out``.

    The connection is read here, before the executor's event loop starts, and the async client
    is built on that loop. Returns the results manifest.
    """
    hook = provider_hook(provider, conn_id)
    client_options = hook.client_options()
    return run_interactive(
        rows,
        provider=provider,
        tier=tier,
        client=lambda: hook.build_async_client(client_options),
        out=out,
        logger=log,
        **executor_options,
    )
