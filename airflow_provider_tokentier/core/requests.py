"""Validation and normalization of provider-native request rows, streamed one row at a time.

Rows are numbered from 0 in the order they arrive (``request #0`` is the first row), and every
error names the row number and its ``custom_id`` so a user can find it in a file of 100,000 rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_tokentier.core.errors import RequestValidationError
from airflow_provider_tokentier.core.jsonl import dumps_line

CUSTOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

PROVIDERS = ("anthropic", "openai")

OPENAI_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
)

# The body field each OpenAI batch endpoint cannot do without.
_OPENAI_REQUIRED_BODY_FIELD = {
    "/v1/responses": "input",
    "/v1/chat/completions": "messages",
    "/v1/embeddings": "input",
    "/v1/completions": "prompt",
    "/v1/moderations": "input",
}

_ANTHROPIC_ROW_KEYS = frozenset({"custom_id", "params"})
_OPENAI_ROW_KEYS = frozenset({"custom_id", "method", "url", "body"})


def iter_validated(
    rows: Iterable[Mapping[str, Any]],
    provider: str,
    *,
    endpoint: str | None = None,
    default_model: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Validate and normalize ``rows`` lazily, yielding one normalized row per input row.

    Anthropic rows come out as ``{"custom_id", "params"}``, OpenAI rows as
    ``{"custom_id", "method": "POST", "url", "body"}`` with ``method``/``url`` filled from
    ``endpoint`` and a missing model filled from ``default_model``. Input rows are not mutated.
    Only the set of custom_ids seen so far is kept, so memory is O(number of rows' ids), never
    O(rows). The first invalid row raises :class:`RequestValidationError` when it is reached.

    ``endpoint`` is the OpenAI batch endpoint of the workload; when omitted, the first row's
    ``url`` sets it. Arguments are checked at call time, rows as they are consumed.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
    if endpoint is not None and endpoint not in OPENAI_ENDPOINTS:
        raise ValueError(
            f"unsupported OpenAI batch endpoint {endpoint!r}; expected one of {OPENAI_ENDPOINTS}"
        )
    if provider == "anthropic":
        return _iter_anthropic(rows, default_model)
    return _iter_openai(rows, endpoint, default_model)


def serialize_request(row: Mapping[str, Any], provider: str) -> bytes:
    """Encode a normalized row as the compact JSON the provider takes, without a trailing newline.

    Anthropic: one item of the batch body's ``requests`` array, ``{"custom_id", "params"}``.
    OpenAI: one line of the batch input file, ``{"custom_id", "method", "url", "body"}``.
    """
    if provider == "anthropic":
        return dumps_line({"custom_id": row["custom_id"], "params": row["params"]})
    if provider == "openai":
        return dumps_line(
            {"custom_id": row["custom_id"], "method": row["method"], "url": row["url"], "body": row["body"]}
        )
    raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")


def count_embedding_inputs(row: Mapping[str, Any]) -> int:
    """Return how many inputs a normalized OpenAI row counts toward the batch embedding-input cap.

    A string or one token array is one input; a list of strings or of token arrays is one per item.
    Rows for other endpoints count 0.
    """
    if row.get("url") != "/v1/embeddings":
        return 0
    value = row["body"].get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


class _CustomIdRegistry:
    """Checks custom_id syntax and uniqueness, remembering where each id was first seen."""

    def __init__(self) -> None:
        self._first_index: dict[str, int] = {}

    def register(self, index: int, row: Mapping[str, Any]) -> str:
        custom_id = row.get("custom_id")
        if custom_id is None:
            raise RequestValidationError(index, None, "custom_id is required")
        # fullmatch: with match(), "$" would also accept a trailing newline.
        if not isinstance(custom_id, str) or not CUSTOM_ID_PATTERN.fullmatch(custom_id):
            raise RequestValidationError(
                index,
                None,
                f"custom_id {custom_id!r} must be a string matching {CUSTOM_ID_PATTERN.pattern}",
            )
        first = self._first_index.setdefault(custom_id, index)
        if first != index:
            raise RequestValidationError(
                index, custom_id, f"duplicate custom_id, already used by request #{first}"
            )
        return custom_id


def _check_row_shape(index: int, row: object, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        raise RequestValidationError(
            index, None, f"a request must be a JSON object, got {type(row).__name__}"
        )
    unknown = [key for key in row if key not in allowed]
    if unknown:
        raw_id = row.get("custom_id")
        custom_id = raw_id if isinstance(raw_id, str) else None
        raise RequestValidationError(
            index,
            custom_id,
            f"unknown top-level key(s) {unknown}; allowed: {sorted(allowed)}",
        )
    return row


def _model_or_default(
    index: int, custom_id: str, payload: dict[str, Any], field: str, default_model: str | None
) -> str:
    model = payload.get("model")
    if model is None:
        if default_model is None:
            raise RequestValidationError(
                index, custom_id, f"{field}.model is required (no default model given)"
            )
        payload["model"] = default_model
        return default_model
    if not isinstance(model, str) or not model:
        raise RequestValidationError(index, custom_id, f"{field}.model must be a non-empty string")
    return model


def _reject_streaming(index: int, custom_id: str, payload: Mapping[str, Any], field: str) -> None:
    if payload.get("stream") is True:
        raise RequestValidationError(index, custom_id, f"{field}.stream=true is not allowed in a batch")


def _check_sendable(index: int, custom_id: str, payload: Mapping[str, Any], field: str) -> None:
    """Refuse values JSON cannot carry: NaN/Infinity and strings with lone surrogates.

    msgspec would send NaN as null; a lone surrogate is not encodable as UTF-8. One compact
    encode per row finds both cheaply; the payload is walked only to name the field when the
    encoding hints at a problem.
    """
    try:
        encoded = dumps_line(payload)
    except UnicodeEncodeError:
        encoded = b"null"  # walk to name the string
    except TypeError as exc:  # an object msgspec cannot encode
        raise RequestValidationError(
            index, custom_id, f"{field} holds a value JSON cannot carry: {exc}"
        ) from None
    if b"null" not in encoded:
        return
    problem = _first_unsendable(payload, field)
    if problem is not None:
        raise RequestValidationError(index, custom_id, problem)


def unsendable_value(row: Any) -> str | None:
    """What in ``row`` JSON cannot carry (NaN/Infinity, a lone surrogate), by path, or None.

    For rows that must be refused before they even reach validation, such as literal operator
    arguments Airflow itself could not serialize.
    """
    if not isinstance(row, Mapping):
        return None
    for key, value in row.items():
        found = _first_unsendable(value, str(key))
        if found is not None:
            return found
    return None


def _first_unsendable(value: Any, path: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} is {value!r}; JSON carries only finite numbers (NaN and Infinity are not sent)"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"{path} holds a lone surrogate {value[exc.start]!r} at position {exc.start}: "
                "not valid Unicode text, so it cannot be sent as UTF-8"
            )
        return None
    if isinstance(value, Mapping):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_unsendable(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}")
        if found is not None:
            return found
    return None


def _payload_copy(index: int, custom_id: str, row: Mapping[str, Any], field: str) -> dict[str, Any]:
    payload = row.get(field)
    if payload is None:
        raise RequestValidationError(index, custom_id, f"{field} is required")
    if not isinstance(payload, Mapping):
        raise RequestValidationError(
            index, custom_id, f"{field} must be an object, got {type(payload).__name__}"
        )
    # Shallow copy: filling the default model must not change the caller's row.
    return dict(payload)


def _iter_anthropic(rows: Iterable[Mapping[str, Any]], default_model: str | None) -> Iterator[dict[str, Any]]:
    ids = _CustomIdRegistry()
    for index, raw in enumerate(rows):
        row = _check_row_shape(index, raw, _ANTHROPIC_ROW_KEYS)
        custom_id = ids.register(index, row)
        params = _payload_copy(index, custom_id, row, "params")
        _model_or_default(index, custom_id, params, "params", default_model)
        max_tokens = params.get("max_tokens")
        if max_tokens is None:
            raise RequestValidationError(index, custom_id, "params.max_tokens is required")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise RequestValidationError(
                index, custom_id, f"params.max_tokens must be a positive integer, got {max_tokens!r}"
            )
        messages = params.get("messages")
        if messages is None:
            raise RequestValidationError(index, custom_id, "params.messages is required")
        if not isinstance(messages, list) or not messages:
            raise RequestValidationError(index, custom_id, "params.messages must be a non-empty list")
        _reject_streaming(index, custom_id, params, "params")
        _check_sendable(index, custom_id, params, "params")
        yield {"custom_id": custom_id, "params": params}


def _iter_openai(
    rows: Iterable[Mapping[str, Any]], endpoint: str | None, default_model: str | None
) -> Iterator[dict[str, Any]]:
    ids = _CustomIdRegistry()
    workload_model: str | None = None
    workload_model_index = 0
    for index, raw in enumerate(rows):
        row = _check_row_shape(index, raw, _OPENAI_ROW_KEYS)
        custom_id = ids.register(index, row)

        method = row.get("method", "POST")
        if method != "POST":
            raise RequestValidationError(index, custom_id, f"method must be 'POST', got {method!r}")
        url = row.get("url", endpoint)
        if url is None:
            raise RequestValidationError(index, custom_id, "url is required when no endpoint is given")
        if endpoint is None:
            if url not in OPENAI_ENDPOINTS:
                raise RequestValidationError(
                    index, custom_id, f"url {url!r} is not a supported batch endpoint {OPENAI_ENDPOINTS}"
                )
            # The first row fixes the workload's endpoint: one batch serves one endpoint.
            endpoint = url
        elif url != endpoint:
            raise RequestValidationError(
                index, custom_id, f"url {url!r} does not match the workload endpoint {endpoint!r}"
            )

        body = _payload_copy(index, custom_id, row, "body")
        model = _model_or_default(index, custom_id, body, "body", default_model)
        if workload_model is None:
            workload_model, workload_model_index = model, index
        elif model != workload_model:
            raise RequestValidationError(
                index,
                custom_id,
                f"body.model {model!r} differs from {workload_model!r} used by request "
                f"#{workload_model_index}; an OpenAI batch file takes a single model",
            )

        required = _OPENAI_REQUIRED_BODY_FIELD[endpoint]
        value = body.get(required)
        if value is None:
            raise RequestValidationError(index, custom_id, f"body.{required} is required for {endpoint}")
        if endpoint == "/v1/chat/completions" and not isinstance(value, list):
            raise RequestValidationError(index, custom_id, "body.messages must be a list")
        if isinstance(value, (str, list)) and not value:
            raise RequestValidationError(index, custom_id, f"body.{required} must not be empty")
        _reject_streaming(index, custom_id, body, "body")
        _check_sendable(index, custom_id, body, "body")
        yield {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}
