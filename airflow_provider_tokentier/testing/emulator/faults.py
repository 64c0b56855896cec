"""Hostile provider output on demand: the ``faults`` knob of the emulator.

``faults`` maps a fault name to how many more times it fires (``{"html_200": 1}``; a large count
means "always"); each firing uses one up. Result faults rewrite one download of a batch's
results (Anthropic ``/results``, OpenAI output and error files); the others answer a call.

| fault | what the client gets |
|---|---|
| ``cut_stream`` | the results body breaks off mid-line (the connection drops) |
| ``truncate_line`` | the results body ends cleanly, but in the middle of its last line |
| ``unknown_type`` | the first line has a result type the API does not document |
| ``foreign_ids`` | two extra lines for custom_ids nobody sent |
| ``duplicate_ids`` | the first line appears twice, the second time as a different outcome |
| ``missing_ids`` | the first line is left out |
| ``usage_absent`` | the first succeeded line has no ``usage`` |
| ``usage_negative`` | the first succeeded line reports negative token counts |
| ``huge_error`` | the first line is an error with a 100 KB message |
| ``html_200`` | an HTML error page, with status 200, as a proxy might serve |
| ``create_500`` | a batch-create call answered 500 without creating anything |
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec
from starlette.responses import HTMLResponse, Response, StreamingResponse


class EmulatorConfig(Protocol):
    """What the faults need of the emulator's settings (config.py imports this module)."""

    faults: dict[str, int]


RESULT_FAULTS = (
    "cut_stream",
    "truncate_line",
    "unknown_type",
    "foreign_ids",
    "duplicate_ids",
    "missing_ids",
    "usage_absent",
    "usage_negative",
    "huge_error",
    "html_200",
)
CALL_FAULTS = ("create_500",)
FAULTS = RESULT_FAULTS + CALL_FAULTS

#: Size of the ``huge_error`` message.
HUGE_MESSAGE_BYTES = 100 * 1024

_HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><h1>Bad Gateway</h1><p>The upstream server returned an invalid response.</p></body></html>\n"
)


def check_faults(value: Any) -> dict[str, int]:
    """Validate a ``faults`` setting: known names mapped to non-negative counts."""
    if not isinstance(value, Mapping):
        raise ValueError(f"faults must be an object of fault name -> count, got {value!r}")
    checked: dict[str, int] = {}
    for name, count in value.items():
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {list(FAULTS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"faults[{name!r}] must be a non-negative integer, got {count!r}")
        checked[str(name)] = count
    return checked


def fire(config: EmulatorConfig, name: str) -> bool:
    """Use up one firing of fault ``name``; False when it is not armed."""
    left = config.faults.get(name, 0)
    if left <= 0:
        return False
    config.faults[name] = left - 1
    return True


def armed_result_faults(config: EmulatorConfig) -> list[str]:
    """The result faults that fire on this download (each uses one firing)."""
    return [name for name in RESULT_FAULTS if fire(config, name)]


def faulty_results(config: EmulatorConfig, path: Path, provider: str, media_type: str) -> Response | None:
    """A hostile response for one download of the results file at ``path``; None when no fault is armed."""
    faults = armed_result_faults(config)
    if not faults:
        return None
    if "html_200" in faults:
        return HTMLResponse(_HTML_PAGE, status_code=200)
    body = _rewrite(path.read_bytes().splitlines(), faults, provider)
    if "truncate_line" in faults and body:
        body = body[: len(body) - max(2, len(body.rstrip(b"\n").rsplit(b"\n", 1)[-1]) // 2)]
    if "cut_stream" in faults:
        return StreamingResponse(_cut(body), media_type=media_type)
    return Response(body, media_type=media_type)


def _cut(body: bytes) -> Iterator[bytes]:
    """Send part of ``body``, ending mid-line, then break the connection."""
    yield body[: max(1, len(body) // 2 + 7)]
    raise ConnectionResetError("emulator fault cut_stream: the results stream broke off")


def _rewrite(raw_lines: list[bytes], faults: list[str], provider: str) -> bytes:
    lines = [msgspec.json.decode(line) for line in raw_lines if line.strip()]
    if lines:
        _apply(lines, faults, provider)
    return b"".join(msgspec.json.encode(line) + b"\n" for line in lines)


def _apply(lines: list[dict[str, Any]], faults: list[str], provider: str) -> None:
    first = lines[0]
    if "duplicate_ids" in faults:
        twin = copy.deepcopy(first)
        _make_error(twin, provider, "api_error", "a second, different outcome for the same request")
        lines.append(twin)
    if "foreign_ids" in faults:
        for n in range(2):
            stranger = copy.deepcopy(first)
            stranger["custom_id"] = f"not-sent-by-you-{n}"
            lines.append(stranger)
    holder = _first_billed_body(lines, provider)
    if holder is not None and "usage_absent" in faults:
        del holder["usage"]
    elif holder is not None and "usage_negative" in faults:
        usage = holder["usage"]
        for key in list(usage):
            if isinstance(usage[key], int):
                usage[key] = -abs(usage[key]) - 1
    if "unknown_type" in faults:
        _make_unknown(first, provider)
    if "huge_error" in faults:
        _make_error(first, provider, "api_error", "x" * HUGE_MESSAGE_BYTES)
    if "missing_ids" in faults:
        lines.pop(0)


def _first_billed_body(lines: list[dict[str, Any]], provider: str) -> dict[str, Any] | None:
    """The message (Anthropic) or response body (OpenAI) of the first succeeded line with usage."""
    for line in lines:
        if provider == "anthropic":
            result = line.get("result") or {}
            holder = result.get("message") if result.get("type") == "succeeded" else None
        else:
            response = line.get("response") or {}
            holder = response.get("body") if response.get("status_code") == 200 else None
        if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
            return holder
    return None


def _make_error(line: dict[str, Any], provider: str, kind: str, message: str) -> None:
    if provider == "anthropic":
        error = {"type": kind, "message": message}
        line["result"] = {
            "type": "errored",
            "error": {"type": "error", "error": error, "request_id": "req_fault"},
        }
    else:
        line["response"] = {
            "status_code": 500,
            "request_id": "req_fault",
            "body": {"error": {"message": message, "type": kind, "param": None, "code": None}},
        }
        line["error"] = None


def _make_unknown(line: dict[str, Any], provider: str) -> None:
    if provider == "anthropic":
        line["result"] = {"type": "deferred", "retry_after": 60}
    else:
        line["response"] = None
        line["error"] = None
        line["status"] = "deferred"
