"""The emulator's ASGI app: provider routes, auth, latency, and the `/_emulator` admin API."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from airflow_provider_tokentier.testing.emulator import anthropic_api, openai_api
from airflow_provider_tokentier.testing.emulator.errors import (
    ProviderError,
    handle_provider_error,
    provider_of_path,
    render_error,
)
from airflow_provider_tokentier.testing.emulator.state import EmulatorState


class ProviderGate:
    """Pure ASGI middleware: counts calls, checks the API key, adds the configured latency.

    Pure ASGI (not BaseHTTPMiddleware) so streamed result downloads stay streamed and the
    per-request overhead stays small under a thousand concurrent pollers.
    """

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count, delay and authenticate ``/v1/`` HTTP requests; anything else passes straight through."""
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        self.state.calls[f"{scope['method']} {_route_shape(path)}"] += 1
        latency = self.state.config.latency_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        error = self._auth_error(scope)
        if error is not None:
            await render_error(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _auth_error(self, scope: Scope) -> ProviderError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        provider = provider_of_path(scope["path"])
        key = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if provider == "anthropic":
            key = headers.get("x-api-key", "").strip() or key
        expected = self.state.config.api_key
        if key and (expected is None or key == expected):
            return None
        if provider == "anthropic":
            message = "invalid x-api-key" if key else "x-api-key header is required"
            return ProviderError("anthropic", 401, "authentication_error", message)
        message = "Incorrect API key provided." if key else "You didn't provide an API key."
        return ProviderError("openai", 401, "invalid_request_error", message, code="invalid_api_key")


def _route_shape(path: str) -> str:
    """Collapse ids in a path so call counts group by endpoint."""
    parts = path.split("/")
    return "/".join("{id}" if part.startswith(("msgbatch_", "batch_", "file-")) else part for part in parts)


def create_app(state: EmulatorState | None = None) -> FastAPI:
    """Build the emulator app around ``state`` (a fresh default state when omitted)."""
    state = state or EmulatorState()
    app = FastAPI(title="tokentier provider emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = state
    app.add_exception_handler(ProviderError, handle_provider_error)
    app.add_middleware(ProviderGate, state=state)
    app.include_router(anthropic_api.build_router(state))
    app.include_router(openai_api.build_router(state))

    @app.get("/_emulator/config")
    async def get_config() -> dict[str, Any]:
        return state.config.to_dict()

    @app.post("/_emulator/config")
    async def set_config(request: Request) -> JSONResponse:
        try:
            state.configure(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(state.config.to_dict())

    @app.get("/_emulator/billing")
    async def billing() -> dict[str, Any]:
        return state.billing.snapshot()

    @app.get("/_emulator/clock")
    async def clock() -> dict[str, Any]:
        return {"now": state.clock.now(), "time_scale": state.clock.time_scale}

    @app.post("/_emulator/clock/advance")
    async def advance(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            now = state.clock.advance(float(body["seconds"]))
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": f"expected {{'seconds': N >= 0}}: {exc}"}, status_code=400)
        return JSONResponse({"now": now, "time_scale": state.clock.time_scale})

    @app.get("/_emulator/batches")
    async def batches() -> dict[str, Any]:
        return state.store_summaries()

    @app.get("/_emulator/calls")
    async def calls() -> dict[str, int]:
        return dict(state.calls)

    @app.post("/_emulator/reset")
    async def reset() -> dict[str, bool]:
        state.reset()
        return {"reset": True}

    @app.get("/_emulator/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app
