"""Validation and normalization of provider-native request rows, streamed one row at a time.

Rows are numbered from 0 in the order they arrive (``request #0`` is the first row), and every
error names the row number and its ``custom_id`` so a user can find it in a file of 100,000 rows.

:class:`RequestValidator` checks a workload's rows in order. A JSONL line that is valid as it
stands is checked from one decode into a struct of the row shape and then copied byte for byte
(:meth:`RequestValidator.line`); every other row goes through :meth:`RequestValidator.row`,
which normalizes it or raises the error naming it, so both ways give the same errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgspec

from airflow_provider_tokentier.core.errors import RequestValidationError
from airflow_provider_tokentier.core.jsonl import JsonlLine, decode_jsonl_line, dumps_line

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
    validator = RequestValidator(provider, endpoint=endpoint, default_model=default_model)
    return (validator.row(index, row) for index, row in enumerate(rows))


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
    return _embedding_inputs(row["body"].get("input"))


def _embedding_inputs(value: object) -> int:
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

    def claim(self, index: int, custom_id: str) -> bool:
        """Record a syntactically valid ``custom_id`` first seen at ``index``; False if seen before."""
        return self._first_index.setdefault(custom_id, index) == index


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


class ValidRequest(msgspec.Struct, frozen=True, gc=False):
    """One validated request, as its chunk file line (built once per request: no GC tracking)."""

    custom_id: str
    #: The provider-native JSON line (no newline): the input line itself when it needed no
    #: change, else the normalized row encoded by :func:`serialize_request`.
    line: bytes
    #: What the request counts toward OpenAI's embedding-input cap (0 elsewhere).
    embedding_inputs: int
    #: ``params.model`` / ``body.model``.
    model: str
    #: The OpenAI endpoint (``url``); None for Anthropic.
    url: str | None


class _AnthropicLine(msgspec.Struct, forbid_unknown_fields=True):
    custom_id: str
    params: dict[str, Any]


class _OpenAILine(msgspec.Struct, forbid_unknown_fields=True):
    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


_ANTHROPIC_LINE = msgspec.json.Decoder(_AnthropicLine)
_OPENAI_LINE = msgspec.json.Decoder(_OpenAILine)
#: Where an Anthropic line must start to go out as it is: the wire id is spliced in after it.
_ANTHROPIC_LINE_HEAD = b'{"custom_id":"'


class RequestValidator:
    """Validates the rows of one workload in order, holding only what spans rows.

    That is the custom_ids seen so far and, for OpenAI, the workload's endpoint and model (the
    first row fixes both). Rows are numbered by the caller from 0 in arrival order.
    """

    def __init__(self, provider: str, *, endpoint: str | None = None, default_model: str | None = None):
        """Raise ``ValueError`` for an unknown provider or OpenAI endpoint."""
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
        if endpoint is not None and endpoint not in OPENAI_ENDPOINTS:
            raise ValueError(
                f"unsupported OpenAI batch endpoint {endpoint!r}; expected one of {OPENAI_ENDPOINTS}"
            )
        self.provider = provider
        self.endpoint = endpoint
        self.default_model = default_model
        self._ids = _CustomIdRegistry()
        self._workload_model: str | None = None
        self._workload_model_index = 0

    def row(self, index: int, raw: object) -> dict[str, Any]:
        """Validate one row (any Python value) and return it normalized; raise if it is invalid."""
        if self.provider == "anthropic":
            return self._anthropic_row(index, raw)
        return self._openai_row(index, raw)

    def request(self, index: int, raw: object) -> ValidRequest:
        """Validate one row (any Python value) and encode it for its chunk file."""
        row = self.row(index, raw)
        payload = row["params"] if self.provider == "anthropic" else row["body"]
        return ValidRequest(
            row["custom_id"],
            serialize_request(row, self.provider),
            count_embedding_inputs(row) if self.provider == "openai" else 0,
            payload["model"],
            row.get("url"),
        )

    def line(self, index: int, data: bytes) -> ValidRequest | None:
        """Validate one JSONL line without re-encoding it, when it can go out byte for byte.

        Returns None when the line needs more than a look: it does not decode into the row
        shape, is wrapped in whitespace, needs a default (model, OpenAI method or url), or
        fails a check. Then decode it and pass the row to :meth:`request`, which normalizes it
        or raises the check's error; nothing has been recorded for it. A line that decodes at
        all decodes strictly (UTF-8, no lone surrogate, finite numbers), so it is sendable.
        """
        # More than one "custom_id" key (or such a string value) would make the id ambiguous.
        if data[:1] != b"{" or data[-1:] != b"}" or data.count(b'"custom_id"') != 1:
            return None
        if self.provider == "anthropic":
            return self._anthropic_line(index, data)
        return self._openai_line(index, data)

    def _anthropic_line(self, index: int, data: bytes) -> ValidRequest | None:
        if not data.startswith(_ANTHROPIC_LINE_HEAD):
            return None
        try:
            row = _ANTHROPIC_LINE.decode(data)
        except ValueError:  # msgspec.DecodeError / ValidationError, UnicodeDecodeError
            return None
        custom_id, params = row.custom_id, row.params
        model = params.get("model")
        max_tokens = params.get("max_tokens")
        messages = params.get("messages")
        if (
            type(model) is not str
            or not model
            or type(max_tokens) is not int
            or max_tokens <= 0
            or type(messages) is not list
            or not messages
            or params.get("stream") is True
            or not CUSTOM_ID_PATTERN.fullmatch(custom_id)
            or not self._ids.claim(index, custom_id)
        ):
            return None
        return ValidRequest(custom_id, data, 0, model, None)

    def _openai_line(self, index: int, data: bytes) -> ValidRequest | None:
        try:
            row = _OPENAI_LINE.decode(data)
        except ValueError:  # msgspec.DecodeError / ValidationError, UnicodeDecodeError
            return None
        custom_id, url, body = row.custom_id, row.url, row.body
        endpoint = self.endpoint
        if row.method != "POST" or (url != endpoint if endpoint is not None else url not in OPENAI_ENDPOINTS):
            return None
        model = body.get("model")
        if type(model) is not str or not model or model != (self._workload_model or model):
            return None
        value = body.get(_OPENAI_REQUIRED_BODY_FIELD[url])
        if (
            value is None
            or (url == "/v1/chat/completions" and type(value) is not list)
            or (isinstance(value, (str, list)) and not value)
            or body.get("stream") is True
            or not CUSTOM_ID_PATTERN.fullmatch(custom_id)
            or not self._ids.claim(index, custom_id)
        ):
            return None
        if self._workload_model is None:
            self._workload_model, self._workload_model_index = model, index
        self.endpoint = url
        inputs = _embedding_inputs(value) if url == "/v1/embeddings" else 0
        return ValidRequest(custom_id, data, inputs, model, url)

    def _anthropic_row(self, index: int, raw: object) -> dict[str, Any]:
        row = _check_row_shape(index, raw, _ANTHROPIC_ROW_KEYS)
        custom_id = self._ids.register(index, row)
        params = _payload_copy(index, custom_id, row, "params")
        _model_or_default(index, custom_id, params, "params", self.default_model)
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
        return {"custom_id": custom_id, "params": params}

    def _openai_row(self, index: int, raw: object) -> dict[str, Any]:
        row = _check_row_shape(index, raw, _OPENAI_ROW_KEYS)
        custom_id = self._ids.register(index, row)

        method = row.get("method", "POST")
        if method != "POST":
            raise RequestValidationError(index, custom_id, f"method must be 'POST', got {method!r}")
        endpoint = self.endpoint
        url = row.get("url", endpoint)
        if url is None:
            raise RequestValidationError(index, custom_id, "url is required when no endpoint is given")
        if endpoint is None:
            if url not in OPENAI_ENDPOINTS:
                raise RequestValidationError(
                    index, custom_id, f"url {url!r} is not a supported batch endpoint {OPENAI_ENDPOINTS}"
                )
            # The first row fixes the workload's endpoint: one batch serves one endpoint.
            endpoint = self.endpoint = url
        elif url != endpoint:
            raise RequestValidationError(
                index, custom_id, f"url {url!r} does not match the workload endpoint {endpoint!r}"
            )

        body = _payload_copy(index, custom_id, row, "body")
        model = _model_or_default(index, custom_id, body, "body", self.default_model)
        if self._workload_model is None:
            self._workload_model, self._workload_model_index = model, index
        elif model != self._workload_model:
            raise RequestValidationError(
                index,
                custom_id,
                f"body.model {model!r} differs from {self._workload_model!r} used by request "
                f"#{self._workload_model_index}; an OpenAI batch file takes a single model",
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
        return {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}


def iter_valid_requests(
    validator: RequestValidator, rows: Iterable[Mapping[str, Any]]
) -> Iterator[ValidRequest]:
    """Validate ``rows`` (Python values) in order, each encoded for its chunk file."""
    for index, row in enumerate(rows):
        yield validator.request(index, row)


def iter_valid_lines(
    validator: RequestValidator, lines: Iterable[JsonlLine], *, source: str
) -> Iterator[ValidRequest]:
    """Validate the lines of a JSONL request file in order, copying every line that can go as it is.

    A line that cannot is decoded (a line that is not one JSON object raises `JsonlFileError`
    naming ``source``) and validated, normalized and re-encoded like a Python row, so errors
    are the same whichever way a row arrives.
    """
    for index, line in enumerate(lines):
        request = validator.line(index, line.data)
        yield (
            request
            if request is not None
            else validator.request(index, decode_jsonl_line(line, source=source))
        )
