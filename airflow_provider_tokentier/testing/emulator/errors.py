"""Provider error envelopes, so the SDKs raise their own typed exceptions."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse


class ProviderError(Exception):
    """An API error answered in the provider's own envelope and status code."""

    def __init__(
        self,
        provider: str,
        status: int,
        type_: str,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.type = type_
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def anthropic_error(status: int, type_: str, message: str, **kw: object) -> ProviderError:
    """An Anthropic error (``type`` such as ``invalid_request_error`` or ``not_found_error``)."""
    return ProviderError("anthropic", status, type_, message, **kw)  # type: ignore[arg-type]


def openai_error(
    status: int, type_: str, message: str, *, param: str | None = None, code: str | None = None
) -> ProviderError:
    """An OpenAI error (``type`` such as ``invalid_request_error``)."""
    return ProviderError("openai", status, type_, message, param=param, code=code)


def provider_of_path(path: str) -> str:
    """Which provider a path belongs to: Anthropic owns ``/v1/messages*``, OpenAI the rest."""
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def render_error(error: ProviderError) -> JSONResponse:
    """The JSON error response ``error``'s provider would send, with a fresh request id."""
    request_id = f"req_{uuid.uuid4().hex[:24]}"
    if error.provider == "anthropic":
        body: dict[str, object] = {
            "type": "error",
            "error": {"type": error.type, "message": error.message},
            "request_id": request_id,
        }
        headers = {"request-id": request_id, **error.headers}
    else:
        body = {
            "error": {
                "message": error.message,
                "type": error.type,
                "param": error.param,
                "code": error.code,
            }
        }
        headers = {"x-request-id": request_id, **error.headers}
    return JSONResponse(body, status_code=error.status, headers=headers)


async def handle_provider_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI exception handler: render a raised ``ProviderError`` as its provider's error response."""
    assert isinstance(exc, ProviderError)
    return render_error(exc)
