"""The OpenAI half of the emulator: Files, Batch, Chat Completions, Responses and Embeddings.

Batches are lazy: creating one parses and checks its input file once, fixes every request's
fate with `simulation.plan_batch`, and from then on every read computes the status from the
virtual clock. The first read that finds a batch terminal writes its output and error files
(once, on a worker thread, streamed to the spool) and bills the succeeded requests at the
batch tier.

Choices where the public docs leave room (see the module's tests for the exact shapes):

* A request that fails inside a batch (fated server error, or an invalid body) goes to the
  **error file** as ``{"response": {"status_code": 500|400, "request_id", "body": {"error":
  {...}}}, "error": null}`` and counts in ``request_counts.failed`` -- what the real service
  does. Requests that never ran (expired / cancelled) get ``"response": null`` and
  ``"error": {"code": "batch_expired" | "batch_cancelled", "message"}`` and count in neither.
* Cancelling a batch already in a terminal state answers 409 ``invalid_request_error``
  ("Cannot cancel a batch with status 'completed'."); cancelling a ``cancelling`` batch returns
  it unchanged.
* A flex call refused for capacity answers 429 with ``type``/``code`` ``resource_unavailable``
  and the message "Resource Unavailable ..." (never billed).
"""

from __future__ import annotations

import array
import asyncio
import bisect
import dataclasses
import hashlib
import math
import os
import random
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from airflow_provider_tokentier.core import models
from airflow_provider_tokentier.core.pricing import usage_from_openai
from airflow_provider_tokentier.testing.emulator.errors import ProviderError, openai_error
from airflow_provider_tokentier.testing.emulator.faults import faulty_results, fire
from airflow_provider_tokentier.testing.emulator.simulation import (
    BATCH_WINDOW_S,
    ERROR,
    EXPIRE,
    SUCCEED,
    BatchTimeline,
    estimate_tokens,
    plan_batch,
    synth_embedding,
    synth_text,
)
from airflow_provider_tokentier.testing.emulator.state import EmulatorState

PROVIDER = "openai"
BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
)
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data")
MAX_BATCH_LINES = 50_000
MAX_BATCH_BYTES = 200 * 1024 * 1024
MAX_EMBEDDING_INPUTS = 50_000
DEFAULT_BATCH_FILE_TTL_S = 30 * 24 * 3600
MIN_FILE_TTL_S, MAX_FILE_TTL_S = 3600, 30 * 24 * 3600
CACHE_PREFIX_TOKENS = 1024
#: Virtual seconds a batch spends in ``finalizing`` before any configured stall.
FINALIZING_BASE_S = (5.0, 30.0)
VALIDATION_S = (30.0, 120.0)
MAX_REPORTED_ERRORS = 100
_CHUNK = 256 * 1024
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(data), status_code=status, media_type="application/json", headers=headers)


def _hex(*parts: object, length: int = 24) -> str:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()[:length]


def is_flex_model(model: str) -> bool:
    """Whether the emulated API serves ``model`` on flex: the one rule, from core."""
    return models.is_flex_model(PROVIDER, model)


# -- records --------------------------------------------------------------------------------------


@dataclasses.dataclass
class FileRecord:
    """A stored file (upload or batch output) and where its bytes live on the spool."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    path: Path

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI ``File`` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.expires_at,
            "status_details": None,
        }


@dataclasses.dataclass
class ParsedInput:
    """What validating an input file found."""

    custom_ids: list[str]
    offsets: array.array[int]
    #: Estimated prompt tokens of the whole file (for the enqueued-token limit).
    input_tokens: int
    model: str | None
    errors: list[dict[str, Any]]
    #: Line index -> (param, message) for bodies that run and fail with a 400.
    invalid: dict[int, tuple[str | None, str]]


@dataclasses.dataclass
class Outcome:
    """A terminal batch's materialized files and totals."""

    output_file_id: str | None
    error_file_id: str | None
    completed: int
    failed: int
    usage: dict[str, Any] | None


@dataclasses.dataclass
class BatchRecord:
    """One batch: its request, parsed input, planned timeline and, once terminal, its outcome."""

    id: str
    endpoint: str
    input_file_id: str
    input_path: Path
    completion_window: str
    created_at: float
    metadata: dict[str, str] | None
    output_expires_after: int | None
    parsed: ParsedInput
    validation_s: float
    finalize_s: float
    failed_errors: list[dict[str, Any]] | None
    timeline: BatchTimeline | None
    #: Sorted finish times of requests fated to succeed whose body is invalid (they fail with 400).
    invalid_finish: list[float]
    cancel_requested_at: float | None = None
    cancel_latency_s: float = 0.0
    outcome: Outcome | None = None
    materializing: asyncio.Future[Outcome] | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def model(self) -> str | None:
        """The model every request in the input file names (a batch uses one)."""
        return self.parsed.model

    @property
    def total(self) -> int:
        """Number of requests in the input file."""
        return len(self.parsed.custom_ids)

    @property
    def validated_at(self) -> float:
        """Virtual time input validation ends."""
        return self.created_at + self.validation_s

    @property
    def expires_at(self) -> float:
        """Virtual time the completion window closes."""
        return self.created_at + BATCH_WINDOW_S

    def phase(self, now: float) -> tuple[str, dict[str, float | None], float]:
        """(status, timestamps, cutoff): the status at ``now`` and when work stopped counting."""
        ts: dict[str, float | None] = dict.fromkeys(
            (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        )
        cancel_at = self.cancel_requested_at
        if self.failed_errors is not None or self.timeline is None:
            end = self.validated_at
            if cancel_at is not None and cancel_at < end:
                return self._cancel_phase(now, ts, cancel_at, None)
            if now < end:
                return "validating", ts, now
            ts["failed_at"] = end
            return "failed", ts, end
        timeline = self.timeline
        if now < self.validated_at and (cancel_at is None or now < cancel_at):
            return "validating", ts, now
        if cancel_at is not None and cancel_at < self.validated_at:
            return self._cancel_phase(now, ts, cancel_at, None)
        ts["in_progress_at"] = self.validated_at
        if timeline.will_expire:
            if cancel_at is not None and cancel_at < self.expires_at:
                return self._cancel_phase(now, ts, cancel_at, self.validated_at)
            if now < self.expires_at:
                return "in_progress", ts, now
            ts["expired_at"] = self.expires_at
            return "expired", ts, self.expires_at
        done = timeline.all_done_at
        completed_at = done + self.finalize_s
        if cancel_at is not None and cancel_at < completed_at:
            return self._cancel_phase(now, ts, cancel_at, self.validated_at)
        if now < done:
            return "in_progress", ts, now
        ts["finalizing_at"] = done
        if now < completed_at:
            return "finalizing", ts, now
        ts["completed_at"] = completed_at
        return "completed", ts, math.inf

    def _cancel_phase(
        self, now: float, ts: dict[str, float | None], cancel_at: float, in_progress_at: float | None
    ) -> tuple[str, dict[str, float | None], float]:
        ts["in_progress_at"] = in_progress_at
        ts["cancelling_at"] = cancel_at
        cancelled_at = cancel_at + self.cancel_latency_s
        if now < cancelled_at:
            return "cancelling", ts, now
        ts["cancelled_at"] = cancelled_at
        return "cancelled", ts, cancelled_at

    def counts(self, cutoff: float) -> tuple[int, int]:
        """(completed, failed) requests settled by ``cutoff``."""
        if self.timeline is None:
            return 0, 0
        succeeded, errored = self.timeline.settled_counts(cutoff)
        bad = bisect.bisect_right(self.invalid_finish, cutoff)
        return succeeded - bad, errored + bad


# -- request bodies -------------------------------------------------------------------------------


def _text_of(value: Any) -> str:
    """The text inside a message content / Responses input value."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text_of(part) for part in value)
    if isinstance(value, dict):
        if "text" in value and isinstance(value["text"], str):
            return value["text"]
        if "content" in value:
            return _text_of(value["content"])
        if "input" in value:
            return _text_of(value["input"])
        return ""
    return str(value)


def body_problem(endpoint: str, body: dict[str, Any]) -> tuple[str | None, str] | None:
    """Why ``body`` would be rejected with a 400 by ``endpoint`` (param, message), or None."""
    if body.get("stream"):
        return "stream", "Streaming is not supported for this request in the emulator."
    return _required_problem(endpoint, body) or _token_limit_problem(body)


def _required_problem(endpoint: str, body: dict[str, Any]) -> tuple[str | None, str] | None:
    """The (param, message) for a parameter ``endpoint`` requires that ``body`` lacks, or None."""
    if endpoint == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages", "Missing required parameter: 'messages'."
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                return f"messages[{i}].role", f"Missing required parameter: 'messages[{i}].role'."
    elif endpoint == "/v1/responses":
        if not isinstance(body.get("input"), (str, list)) and "prompt" not in body:
            return "input", "Missing required parameter: 'input'."
    elif endpoint in ("/v1/embeddings", "/v1/moderations"):
        value = body.get("input")
        if value is None or value == "" or value == []:
            return "input", "Missing required parameter: 'input'."
    elif endpoint == "/v1/completions" and "prompt" not in body:
        return "prompt", "Missing required parameter: 'prompt'."
    return None


def _token_limit_problem(body: dict[str, Any]) -> tuple[str | None, str] | None:
    """The (param, message) for a token limit or dimension in ``body`` that is not a positive int."""
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens", "dimensions"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return name, f"Invalid '{name}': expected an integer greater than or equal to 1."
    return None


def prompt_text(endpoint: str, body: dict[str, Any]) -> str:
    """The prompt text of a request ``body`` for ``endpoint``, for token estimates and synthesis."""
    if endpoint == "/v1/chat/completions":
        return _text_of(body.get("messages"))
    if endpoint == "/v1/responses":
        instructions = body.get("instructions")
        head = instructions + "\n" if isinstance(instructions, str) else ""
        return head + _text_of(body.get("input"))
    if endpoint == "/v1/completions":
        return _text_of(body.get("prompt"))
    return _text_of(body.get("input"))


def _embedding_inputs(body: dict[str, Any]) -> list[str]:
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        return [
            v if isinstance(v, str) else " ".join(map(str, v)) if isinstance(v, list) else str(v)
            for v in value
        ]
    return []


def input_tokens_of(endpoint: str, body: dict[str, Any]) -> int:
    """Estimated prompt tokens of a request ``body`` (token-id inputs to embeddings count exactly)."""
    if endpoint == "/v1/embeddings":
        value = body.get("input")
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            return len(value)
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            return sum(len(v) for v in value)
        return sum(estimate_tokens(t) for t in _embedding_inputs(body))
    return estimate_tokens(prompt_text(endpoint, body))


class Synthesizer:
    """Builds response bodies; shared by the synchronous endpoints and batch materialization."""

    def __init__(self, store: OpenAIStore) -> None:
        self.store = store

    def _cached(self, model: str, text: str, tokens: int) -> int:
        if tokens < CACHE_PREFIX_TOKENS:
            return 0
        key = _hex(model, text[: CACHE_PREFIX_TOKENS * 4], length=32)
        with self.store.lock:
            hit = key in self.store.prompt_cache
            self.store.prompt_cache.add(key)
        return CACHE_PREFIX_TOKENS if hit else 0

    def body(
        self, endpoint: str, body: dict[str, Any], *, rid: str, created: int, service_tier: str | None
    ) -> dict[str, Any]:
        """The response body ``endpoint`` returns for request ``body``; notes its prompt in the cache."""
        model = str(body.get("model"))
        if endpoint == "/v1/embeddings":
            return self._embeddings(body, model)
        if endpoint == "/v1/moderations":
            return self._moderation(body, model, rid)
        text = prompt_text(endpoint, body)
        prompt_tokens = input_tokens_of(endpoint, body)
        cached = self._cached(model, text, prompt_tokens)
        limit = (
            body.get("max_completion_tokens")
            or body.get("max_tokens")
            or body.get("max_output_tokens")
            or 4096
        )
        reply, out_tokens = synth_text(text, int(limit), salt=model)
        finish = "length" if out_tokens >= int(limit) else "stop"
        if endpoint == "/v1/responses":
            return self._response(
                body, model, rid, created, reply, prompt_tokens, cached, out_tokens, service_tier
            )
        if endpoint == "/v1/completions":
            return {
                "id": f"cmpl-{rid}",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": reply, "logprobs": None, "finish_reason": finish}],
                "usage": self._chat_usage(prompt_tokens, cached, out_tokens),
                "system_fingerprint": f"fp_{_hex(model, length=10)}",
            }
        return {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": self._chat_usage(prompt_tokens, cached, out_tokens),
            "service_tier": service_tier or "default",
            "system_fingerprint": f"fp_{_hex(model, length=10)}",
        }

    @staticmethod
    def _chat_usage(prompt: int, cached: int, output: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _response(
        body: dict[str, Any],
        model: str,
        rid: str,
        created: int,
        reply: str,
        prompt: int,
        cached: int,
        output: int,
        service_tier: str | None,
    ) -> dict[str, Any]:
        limit = body.get("max_output_tokens")
        incomplete = limit is not None and output >= limit
        return {
            "id": f"resp_{rid}",
            "object": "response",
            "created_at": created,
            "completed_at": None if incomplete else created,
            "status": "incomplete" if incomplete else "completed",
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": body.get("instructions") if isinstance(body.get("instructions"), str) else None,
            "max_output_tokens": limit,
            "model": model,
            "output": [
                {
                    "id": f"msg_{_hex(rid, 'msg', length=32)}",
                    "type": "message",
                    "status": "incomplete" if incomplete else "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": reply, "annotations": [], "logprobs": []}],
                }
            ],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": service_tier or "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + output,
            },
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    @staticmethod
    def _embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
        dims = body.get("dimensions") or 256
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(_embedding_inputs(body)):
            vector = synth_embedding(text, int(dims))
            if as_base64:
                import base64
                import struct

                data.append(
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode(),
                    }
                )
            else:
                data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = input_tokens_of("/v1/embeddings", body)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @staticmethod
    def _moderation(body: dict[str, Any], model: str, rid: str) -> dict[str, Any]:
        results = []
        for _text in _embedding_inputs(body):
            results.append(
                {
                    "flagged": False,
                    "categories": dict.fromkeys(_MODERATION_CATEGORIES, False),
                    "category_scores": dict.fromkeys(_MODERATION_CATEGORIES, 0.0001),
                    "category_applied_input_types": {c: ["text"] for c in _MODERATION_CATEGORIES},
                }
            )
        return {"id": f"modr-{rid}", "model": model, "results": results}


def usage_of_body(body: dict[str, Any]) -> dict[str, Any] | None:
    """The ``usage`` object of a response body, or None when it has none (moderations)."""
    usage = body.get("usage")
    return usage if isinstance(usage, dict) else None


# -- input file validation ------------------------------------------------------------------------


class _InputCheck:
    """The state of one pass over a batch input file: what is accepted and what is wrong."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.custom_ids: list[str] = []
        self.seen: set[str] = set()
        self.offsets = array.array("q")
        self.errors: list[dict[str, Any]] = []
        self.invalid: dict[int, tuple[str | None, str]] = {}
        self.model: str | None = None
        self.tokens = 0
        self.inputs = 0

    def fail(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})

    def line(self, raw: bytes, start: int, lineno: int) -> None:
        """Check one non-blank line and accept it or record why it is refused."""
        try:
            item = _decoder.decode(raw)
        except msgspec.DecodeError:
            self.fail("invalid_json_line", "This line is not parseable as valid JSON.", lineno)
            return
        problem = self._refusal(item)
        if problem is not None:
            self.fail(problem[0], problem[1], lineno, problem[2])
            return
        body = item["body"]
        index = len(self.custom_ids)
        self.custom_ids.append(item["custom_id"])
        self.seen.add(item["custom_id"])
        self.offsets.append(start)
        invalid = body_problem(self.endpoint, body)
        if invalid is not None:
            self.invalid[index] = invalid
        self.tokens += input_tokens_of(self.endpoint, body)
        if self.endpoint == "/v1/embeddings":
            self.inputs += len(_embedding_inputs(body))

    def _refusal(self, item: Any) -> tuple[str, str, str | None] | None:
        """(code, message, param) of the first rule the decoded line breaks, or None."""
        if not isinstance(item, dict):
            return "invalid_json_line", "Each line must be a JSON object.", None
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str):
            return "missing_required_parameter", "Missing required parameter: 'custom_id'.", "custom_id"
        if not _CUSTOM_ID.match(custom_id):
            return (
                "invalid_custom_id",
                "custom_id must be 1-64 characters of letters, digits, '_' or '-'.",
                "custom_id",
            )
        if custom_id in self.seen:
            return (
                "duplicate_custom_id",
                "The custom_id for this request is a duplicate of another request. The custom_id "
                "parameter must be unique for each request in a batch.",
                "custom_id",
            )
        if item.get("method") != "POST":
            return "invalid_method", "The method for every request must be 'POST'.", "method"
        if item.get("url") != self.endpoint:
            return (
                "invalid_url",
                f"The URL provided for this request does not match the batch endpoint {self.endpoint!r}.",
                "url",
            )
        return self._body_refusal(item.get("body"))

    def _body_refusal(self, body: Any) -> tuple[str, str, str | None] | None:
        if not isinstance(body, dict):
            return "missing_required_parameter", "Missing required parameter: 'body'.", "body"
        line_model = body.get("model")
        if not isinstance(line_model, str) or not line_model:
            return "missing_required_parameter", "Missing required parameter: 'body.model'.", "body.model"
        if self.model is None:
            self.model = line_model
        elif line_model != self.model:
            return (
                "mismatched_model",
                f"The model {line_model!r} differs from {self.model!r}: every request in a batch must use "
                "the same model.",
                "body.model",
            )
        return None

    def finish(self, lines: int) -> ParsedInput:
        if lines == 0:
            self.fail("empty_file", "The input file is empty.", None)
        if self.endpoint == "/v1/embeddings" and self.inputs > MAX_EMBEDDING_INPUTS:
            self.fail(
                "too_many_requests",
                f"An embeddings batch can hold at most {MAX_EMBEDDING_INPUTS} inputs in total; "
                f"this one has {self.inputs}.",
                None,
            )
        return ParsedInput(self.custom_ids, self.offsets, self.tokens, self.model, self.errors, self.invalid)


def parse_input(path: Path, endpoint: str, size: int) -> ParsedInput:
    """Check a batch input file the way the validating phase does; one pass, flat memory."""
    check = _InputCheck(endpoint)
    if size > MAX_BATCH_BYTES:
        check.fail(
            "file_too_large",
            f"The input file is {size} bytes; a batch input file can be at most 200 MB.",
            None,
        )
        return ParsedInput([], check.offsets, 0, None, check.errors, check.invalid)
    offset = 0
    lineno = 0
    with path.open("rb") as handle:
        for raw in handle:
            start = offset
            offset += len(raw)
            if not raw.strip():
                continue
            lineno += 1
            if lineno > MAX_BATCH_LINES:
                check.fail(
                    "too_many_requests",
                    f"The input file has more than {MAX_BATCH_LINES} requests; a batch can hold at most "
                    f"{MAX_BATCH_LINES}.",
                    lineno,
                )
                break
            check.line(raw, start, lineno)
    return check.finish(lineno)


# -- materialization ------------------------------------------------------------------------------


class _Materializer:
    """Writes one terminal batch's output and error files, billing each succeeded request."""

    def __init__(self, state: EmulatorState, store: OpenAIStore, batch: BatchRecord, status: str) -> None:
        self.state = state
        self.store = store
        self.batch = batch
        self.completed = self.failed = self.wrote_out = self.wrote_err = 0
        self.usage = {"input": 0, "cached": 0, "output": 0, "reasoning": 0}
        self.unfinished_code = "batch_cancelled" if status == "cancelled" else "batch_expired"
        self.unfinished_message = (
            "This request could not be executed before the batch was cancelled."
            if status == "cancelled"
            else "This request could not be executed before the completion window expired."
        )

    def write(self, cutoff: float) -> Outcome:
        state, store, batch = self.state, self.store, self.batch
        order = list(range(batch.total))
        random.Random(f"{state.config.seed}:{batch.id}:order").shuffle(order)
        out_id, err_id = state.new_id("file-", 24), state.new_id("file-", 24)
        out_path, err_path = store.dir / f"{out_id}.jsonl", store.dir / f"{err_id}.jsonl"
        with batch.input_path.open("rb") as source, out_path.open("wb") as out, err_path.open("wb") as err:
            for index in order:
                source.seek(batch.parsed.offsets[index])
                item = _decoder.decode(source.readline())
                line, ok = self._line(index, item["custom_id"], item["body"], cutoff)
                (out if ok else err).write(_encoder.encode(line) + b"\n")
        now = int(min(cutoff, state.clock.now()) if math.isfinite(cutoff) else state.clock.now())
        output_file_id = self._register(out_id, out_path, "output", now) if self.wrote_out else None
        error_file_id = self._register(err_id, err_path, "error", now) if self.wrote_err else None
        if output_file_id is None:
            out_path.unlink(missing_ok=True)
        if error_file_id is None:
            err_path.unlink(missing_ok=True)
        u = self.usage
        usage_dict = {
            "input_tokens": u["input"],
            "input_tokens_details": {"cached_tokens": u["cached"]},
            "output_tokens": u["output"],
            "output_tokens_details": {"reasoning_tokens": u["reasoning"]},
            "total_tokens": u["input"] + u["output"],
        }
        return Outcome(output_file_id, error_file_id, self.completed, self.failed, usage_dict)

    def _register(self, file_id: str, path: Path, kind: str, now: int) -> str:
        ttl = self.batch.output_expires_after
        name = f"batch_{self.batch.id}_{kind}.jsonl"
        size = path.stat().st_size
        self.store.add_file(
            FileRecord(file_id, name, "batch_output", size, now, now + ttl if ttl else None, path)
        )
        return file_id

    def _line(self, index: int, custom_id: str, body: Any, cutoff: float) -> tuple[dict[str, Any], bool]:
        """The output-file line of request ``index`` and whether it goes to the output file."""
        batch = self.batch
        timeline = batch.timeline
        assert timeline is not None
        line_id = f"batch_req_{_hex(batch.id, custom_id, length=32)}"
        request_id = _hex(batch.id, custom_id, "request", length=32)
        fate = timeline.fates[index]
        if fate == EXPIRE or timeline.finish_at[index] > cutoff:
            self.wrote_err += 1
            error = {"code": self.unfinished_code, "message": self.unfinished_message}
            return {"id": line_id, "custom_id": custom_id, "response": None, "error": error}, False
        problem = batch.parsed.invalid.get(index)
        if fate == ERROR or problem is not None:
            self.wrote_err += 1
            self.failed += 1
            status_code, error = _failure(problem)
            response = {"status_code": status_code, "request_id": request_id, "body": {"error": error}}
            return {"id": line_id, "custom_id": custom_id, "response": response, "error": None}, False
        assert fate == SUCCEED
        response_body = self.store.synth.body(
            batch.endpoint,
            body,
            rid=_hex(batch.id, custom_id, "body"),
            created=int(timeline.finish_at[index]),
            service_tier="default",
        )
        self.wrote_out += 1
        self.completed += 1
        self._bill(response_body)
        response = {"status_code": 200, "request_id": request_id, "body": response_body}
        return {"id": line_id, "custom_id": custom_id, "response": response, "error": None}, True

    def _bill(self, response_body: dict[str, Any]) -> None:
        raw_usage = usage_of_body(response_body)
        if raw_usage is None:
            return
        usage = usage_from_openai(raw_usage)
        self.state.billing.charge(PROVIDER, self.batch.model or "", "batch", usage)
        self.usage["input"] += usage.input_tokens + usage.cache_read_tokens
        self.usage["cached"] += usage.cache_read_tokens
        self.usage["output"] += usage.output_tokens
        self.usage["reasoning"] += usage.reasoning_tokens


def _failure(problem: tuple[str | None, str] | None) -> tuple[int, dict[str, Any]]:
    """(status code, error body) of a request that ran and failed: invalid body or server error."""
    if problem is not None:
        return 400, {
            "message": problem[1],
            "type": "invalid_request_error",
            "param": problem[0],
            "code": None,
        }
    return 500, {"message": _SERVER_ERROR, "type": "server_error", "param": None, "code": None}


def materialize(
    state: EmulatorState, store: OpenAIStore, batch: BatchRecord, status: str, cutoff: float
) -> Outcome:
    """Write a terminal batch's output and error files once, billing each succeeded request."""
    with batch.lock:
        if batch.outcome is None:
            if status == "failed" or batch.timeline is None:
                batch.outcome = Outcome(None, None, 0, 0, None)
            else:
                batch.outcome = _Materializer(state, store, batch, status).write(cutoff)
        return batch.outcome


# -- the store ------------------------------------------------------------------------------------


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _bad(message: str, param: str | None = None, code: str | None = None) -> ProviderError:
    return openai_error(400, "invalid_request_error", message, param=param, code=code)


class OpenAIStore:
    """Files and batches of one emulator; registered on the state as ``"openai"``.

    The routes are thin: every rule of the emulated API lives in these methods.
    """

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.lock = threading.Lock()
        self.files: dict[str, FileRecord] = {}
        self.batches: dict[str, BatchRecord] = {}
        #: Batch ids in creation order and each one's place in it (list cursors walk from there).
        self.order: list[str] = []
        self.seq_of: dict[str, int] = {}
        self.prompt_cache: set[str] = set()
        self.generation = 0
        self.synth = Synthesizer(self)

    @property
    def dir(self) -> Path:
        """The store's spool directory, created on first use."""
        path = self.state.spool_dir / "openai"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def reset(self) -> None:
        """Forget every file, batch and prompt-cache entry and delete the spool directory."""
        with self.lock:
            self.files.clear()
            self.batches.clear()
            self.order.clear()
            self.seq_of.clear()
            self.prompt_cache.clear()
            self.generation += 1
        shutil.rmtree(self.state.spool_dir / "openai", ignore_errors=True)

    def summary(self) -> list[dict[str, Any]]:
        """One line per batch (id, status, endpoint, model, input file ...) for the admin endpoint."""
        now = self.state.clock.now()
        return [
            {
                "id": b.id,
                "created_at": int(b.created_at),
                "request_count": b.total,
                "status": b.phase(now)[0],
                "metadata": b.metadata,
                "endpoint": b.endpoint,
                "model": b.model,
                "input_file_id": b.input_file_id,
            }
            for b in list(self.batches.values())
        ]

    # -- faults --------------------------------------------------------------------------------
    def poll_fault(self, kind: str) -> None:
        """Answer a status or file-content call with a transient 5xx at ``poll_error_rate``."""
        self._fault(self.state.config.poll_error_rate, kind)

    def list_fault(self) -> None:
        """Answer a batch list call with a transient 5xx at ``list_error_rate``."""
        self._fault(self.state.config.list_error_rate, "list")

    def _fault(self, rate: float, kind: str) -> None:
        state = self.state
        if rate > 0 and state.next_draw(PROVIDER, "poll", kind) < rate:
            status = (500, 502, 503)[int(state.next_draw(PROVIDER, "poll-status") * 3)]
            message = {
                500: "The server had an error while processing your request. Sorry about that!",
                502: "Bad gateway.",
                503: "The server is overloaded or not ready yet.",
            }[status]
            raise openai_error(status, "server_error", message)

    # -- files ---------------------------------------------------------------------------------
    def get_file(self, file_id: str) -> FileRecord:
        """The file with ``file_id``; a 404 if it is unknown or has expired."""
        record = self.files.get(file_id)
        if record is None or (record.expires_at is not None and self.state.clock.now() >= record.expires_at):
            raise openai_error(404, "invalid_request_error", f"No such File object: {file_id}", param="id")
        return record

    def add_file(self, record: FileRecord) -> None:
        """Register ``record`` so the Files endpoints can find it."""
        with self.lock:
            self.files[record.id] = record

    def delete_file(self, file_id: str) -> None:
        """Forget a file and delete its bytes unless a batch still reads them as input."""
        record = self.get_file(file_id)
        with self.lock:
            self.files.pop(file_id, None)
            in_use = any(b.input_path == record.path for b in self.batches.values())
        if not in_use:
            record.path.unlink(missing_ok=True)

    async def upload(self, form: Any) -> FileRecord:
        """Store the multipart upload in ``form`` as a file (``POST /v1/files``)."""
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise _bad("Missing required parameter: 'file'.", "file")
        if not isinstance(purpose, str) or not purpose:
            raise _bad("Missing required parameter: 'purpose'.", "purpose")
        if purpose not in FILE_PURPOSES:
            raise _bad(f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'", "purpose")
        ttl = _upload_ttl(form, purpose)
        file_id = self.state.new_id("file-", 24)
        path = self.dir / f"{file_id}.upload"
        source = upload.file

        def copy() -> int:
            source.seek(0)
            with path.open("wb") as target:
                shutil.copyfileobj(source, target, _CHUNK)
            return os.path.getsize(path)

        created = int(self.state.clock.now())
        size = await run_in_threadpool(copy)
        expires = created + ttl if ttl is not None else None
        record = FileRecord(file_id, upload.filename or "file", purpose, size, created, expires, path)
        self.add_file(record)
        return record

    def list_files(self, purpose: str | None, order: str) -> list[dict[str, Any]]:
        """Unexpired files, optionally of one ``purpose``, newest first unless ``order`` is ``asc``."""
        now = self.state.clock.now()
        items = [
            f
            for f in list(self.files.values())
            if (purpose is None or f.purpose == purpose) and (f.expires_at is None or now < f.expires_at)
        ]
        if order != "asc":
            items.reverse()  # the dict keeps creation order; newest first by default
        return [f.to_dict() for f in items]

    # -- batches -------------------------------------------------------------------------------
    def get_batch(self, batch_id: str) -> BatchRecord:
        """The batch with ``batch_id``; a 404 if there is none."""
        batch = self.batches.get(batch_id)
        if batch is None:
            raise openai_error(
                404, "invalid_request_error", f"No batch found with id '{batch_id}'.", param="batch_id"
            )
        return batch

    async def create_batch(self, body: dict[str, Any]) -> BatchRecord:
        """Check a ``POST /v1/batches`` body, parse its input file and plan the batch."""
        endpoint = _checked_batch_body(body)
        output_ttl = _check_output_expiry(body.get("output_expires_after"))
        now = self.state.clock.now()
        source = self._batch_input(body["input_file_id"], now)
        parsed = await run_in_threadpool(parse_input, source.path, endpoint, source.bytes)
        state = self.state
        batch_id = state.new_id("batch_", 32)
        created = float(int(now))
        validation_s = VALIDATION_S[0] + (VALIDATION_S[1] - VALIDATION_S[0]) * state.unit(
            batch_id, "validation"
        )
        finalize_s = (
            FINALIZING_BASE_S[0]
            + (FINALIZING_BASE_S[1] - FINALIZING_BASE_S[0]) * state.unit(batch_id, "finalize")
            + state.config.finalizing_stall_s
        )
        failed_errors = parsed.errors or self._token_limit_errors(parsed, now) or None
        timeline = None
        invalid_finish: list[float] = []
        if failed_errors is None:
            timeline = plan_batch(state, batch_id, parsed.custom_ids, created, start_delay_s=validation_s)
            invalid_finish = sorted(
                timeline.finish_at[i] for i in parsed.invalid if timeline.fates[i] == SUCCEED
            )
        batch = BatchRecord(
            id=batch_id,
            endpoint=endpoint,
            input_file_id=source.id,
            input_path=source.path,
            completion_window="24h",
            created_at=created,
            metadata=body.get("metadata"),
            output_expires_after=output_ttl,
            parsed=parsed,
            validation_s=validation_s,
            finalize_s=finalize_s,
            failed_errors=failed_errors,
            timeline=timeline,
            invalid_finish=invalid_finish,
        )
        with self.lock:
            self.batches[batch_id] = batch
            self.seq_of[batch_id] = len(self.order)
            self.order.append(batch_id)
        return batch

    def _batch_input(self, input_file_id: Any, now: float) -> FileRecord:
        record = self.files.get(str(input_file_id))
        if record is None or (record.expires_at is not None and now >= record.expires_at):
            raise _bad(
                f"Invalid 'input_file_id': '{input_file_id}'. No such file.", "input_file_id", "invalid_value"
            )
        if record.purpose != "batch":
            raise _bad(
                f"Invalid 'input_file_id': '{input_file_id}'. "
                "The file must be uploaded with purpose 'batch'.",
                "input_file_id",
            )
        return record

    def _token_limit_errors(self, parsed: ParsedInput, now: float) -> list[dict[str, Any]]:
        """The ``token_limit_exceeded`` error when the batch would pass the enqueued-token limit."""
        limit = self.state.config.enqueued_token_limit
        if limit is None:
            return []
        enqueued = sum(
            b.parsed.input_tokens
            for b in list(self.batches.values())
            if b.model == parsed.model and b.failed_errors is None and b.phase(now)[0] not in _TERMINAL
        )
        if enqueued + parsed.input_tokens <= limit:
            return []
        message = (
            f"Enqueued token limit reached for {parsed.model} in organization org-emulator. "
            f"Limit: {limit} enqueued tokens. Please try again once some in_progress batches "
            "have been completed."
        )
        return [{"code": "token_limit_exceeded", "message": message, "param": None, "line": None}]

    def list_page(self, limit: int, after: str | None) -> tuple[list[BatchRecord], bool]:
        """One page of the newest-first listing after the ``after`` cursor, and whether more follow.

        The walk starts at the cursor's place in the creation order: O(limit) per page.
        """
        with self.lock:
            start = len(self.order) - 1
            if after is not None:
                pivot = self.seq_of.get(after)
                start = -1 if pivot is None else pivot - 1
            page: list[BatchRecord] = []
            index = start
            while index >= 0 and len(page) <= limit:
                batch = self.batches.get(self.order[index])
                if batch is not None:
                    page.append(batch)
                index -= 1
        return page[:limit], len(page) > limit

    def cancel(self, batch: BatchRecord) -> BatchRecord:
        """Request cancellation (409 if already terminal); a repeat request changes nothing."""
        now = self.state.clock.now()
        status = batch.phase(now)[0]
        if status in _TERMINAL:
            raise openai_error(409, "invalid_request_error", f"Cannot cancel a batch with status '{status}'.")
        if batch.cancel_requested_at is None:
            batch.cancel_latency_s = self.state.config.cancel_latency_s
            batch.cancel_requested_at = float(int(now))
        return batch

    async def view(self, batch: BatchRecord) -> dict[str, Any]:
        """The ``Batch`` object now, writing its files first when it has just become terminal."""
        now = self.state.clock.now()
        status, ts, cutoff = batch.phase(now)
        outcome = batch.outcome
        if status in _TERMINAL and outcome is None:
            outcome = await self._ensure_materialized(batch, status, cutoff)
        if outcome is not None:
            completed, failed = outcome.completed, outcome.failed
        else:
            completed, failed = batch.counts(cutoff)
        errors = None
        if batch.failed_errors is not None and status == "failed":
            errors = {"object": "list", "data": batch.failed_errors}
        total = batch.total if status != "validating" else 0
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model,
            "errors": errors,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": status,
            "output_file_id": outcome.output_file_id if outcome else None,
            "error_file_id": outcome.error_file_id if outcome else None,
            "created_at": int(batch.created_at),
            "in_progress_at": _int(ts["in_progress_at"]),
            "expires_at": int(batch.expires_at),
            "finalizing_at": _int(ts["finalizing_at"]),
            "completed_at": _int(ts["completed_at"]),
            "failed_at": _int(ts["failed_at"]),
            "expired_at": _int(ts["expired_at"]),
            "cancelling_at": _int(ts["cancelling_at"]),
            "cancelled_at": _int(ts["cancelled_at"]),
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "usage": outcome.usage if outcome else None,
            "metadata": batch.metadata,
        }

    async def _ensure_materialized(self, batch: BatchRecord, status: str, cutoff: float) -> Outcome:
        future = batch.materializing
        if future is None:
            future = asyncio.ensure_future(
                run_in_threadpool(materialize, self.state, self, batch, status, cutoff)
            )
            batch.materializing = future
        return await asyncio.shield(future)

    # -- synchronous endpoints -----------------------------------------------------------------
    def serve(self, endpoint: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Answer one Chat / Responses / Embeddings call: (response body, response headers)."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("Missing required parameter: 'model'.", "model")
        if body.get("stream"):
            raise _bad("stream=true is not supported by the tokentier emulator.", "stream")
        problem = body_problem(endpoint, body)
        if problem is not None:
            raise _bad(problem[1], problem[0])
        tier, echoed = ("standard", "default")
        if endpoint != "/v1/embeddings":
            tier, echoed = self._service_tier(model, body.get("service_tier"))
        state = self.state
        rid = state.new_id("", 29)
        result = self.synth.body(endpoint, body, rid=rid, created=int(state.clock.now()), service_tier=echoed)
        raw_usage = usage_of_body(result)
        if raw_usage is not None:
            state.billing.charge(PROVIDER, model, tier, usage_from_openai(raw_usage))
        return result, {"x-request-id": f"req_{rid}", "openai-model": model}

    def _service_tier(self, model: str, requested: Any) -> tuple[str, str]:
        """(tier billed, tier echoed) for a requested ``service_tier``; flex may answer 429."""
        if requested == "priority":
            return "priority", "priority"
        if requested in (None, "auto", "default"):
            return "standard", "default"
        if requested != "flex":
            raise _bad(f"Invalid value for 'service_tier': {requested!r}.", "service_tier", "invalid_value")
        if not is_flex_model(model):
            raise _bad(f"Flex processing is not available for model '{model}'.", "service_tier")
        if self.state.next_draw(PROVIDER, "flex", model) < self.state.config.flex_429_rate:
            raise ProviderError(
                PROVIDER,
                429,
                "resource_unavailable",
                "Resource Unavailable: flex processing capacity is temporarily exhausted. "
                "Please retry later or use the default service tier.",
                code="resource_unavailable",
            )
        return "flex", "flex"


def _upload_ttl(form: Any, purpose: str) -> int | None:
    """Seconds until an uploaded file expires (``expires_after[...]`` fields, or the default)."""
    ttl: int | None = DEFAULT_BATCH_FILE_TTL_S if purpose == "batch" else None
    anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return ttl
    if anchor != "created_at":
        raise _bad("expires_after.anchor must be 'created_at'.", "expires_after.anchor")
    try:
        ttl = int(str(seconds))
    except ValueError:
        ttl = -1
    if not MIN_FILE_TTL_S <= ttl <= MAX_FILE_TTL_S:
        raise _bad(
            "expires_after.seconds must be between 3600 (1 hour) and 2592000 (30 days).",
            "expires_after.seconds",
        )
    return ttl


def _checked_batch_body(body: dict[str, Any]) -> str:
    """Check the fields of a ``POST /v1/batches`` body; return its endpoint."""
    for name in ("input_file_id", "endpoint", "completion_window"):
        if body.get(name) is None:
            raise _bad(f"Missing required parameter: '{name}'.", name)
    endpoint, window = body["endpoint"], body["completion_window"]
    if endpoint not in BATCH_ENDPOINTS:
        raise _bad(
            f"Invalid value for 'endpoint': {endpoint!r}. "
            f"Supported values are: {', '.join(BATCH_ENDPOINTS)}.",
            "endpoint",
            "invalid_value",
        )
    if window != "24h":
        raise _bad(
            f"Invalid value for 'completion_window': {window!r}. Supported values are: '24h'.",
            "completion_window",
            "invalid_value",
        )
    _check_metadata(body.get("metadata"))
    return str(endpoint)


# -- the router -----------------------------------------------------------------------------------


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = _decoder.decode(raw) if raw else None
    except msgspec.DecodeError:
        raise _bad(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        ) from None
    if not isinstance(data, dict):
        raise _bad("The request body must be a JSON object.")
    return data


def _stream(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            yield block


def _listing(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def build_router(state: EmulatorState) -> APIRouter:
    """Routes of the emulated OpenAI API: thin handlers over a store registered on ``state``."""
    store = OpenAIStore(state)
    state.register_store(PROVIDER, store)
    router = APIRouter()
    _add_file_routes(router, state, store)
    _add_batch_routes(router, state, store)
    _add_sync_routes(router, store)
    return router


def _add_file_routes(router: APIRouter, state: EmulatorState, store: OpenAIStore) -> None:
    """Add the Files routes (upload, list, retrieve, delete, content) to ``router``."""

    @router.post("/v1/files")
    async def create_file(request: Request) -> Response:
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as exc:  # malformed multipart
            raise _bad(f"Could not parse multipart form: {exc}") from None
        try:
            return _json((await store.upload(form)).to_dict())
        finally:
            await form.close()

    @router.get("/v1/files")
    async def list_files(request: Request) -> Response:
        params = request.query_params
        limit = _limit(params.get("limit"), 10_000, 10_000)
        items = store.list_files(params.get("purpose"), params.get("order", "desc"))
        return _json(_page(items, params.get("after"), limit))

    @router.get("/v1/files/{file_id}")
    async def retrieve_file(file_id: str) -> Response:
        return _json(store.get_file(file_id).to_dict())

    @router.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str) -> Response:
        store.delete_file(file_id)
        return _json({"id": file_id, "object": "file", "deleted": True})

    @router.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str) -> Response:
        store.poll_fault("content")
        record = store.get_file(file_id)
        hostile = (
            faulty_results(state.config, record.path, "openai", "application/octet-stream")
            if record.purpose == "batch_output"
            else None
        )
        if hostile is not None:
            return hostile
        headers = {"content-length": str(record.bytes)}
        return StreamingResponse(_stream(record.path), media_type="application/octet-stream", headers=headers)


def _add_batch_routes(router: APIRouter, state: EmulatorState, store: OpenAIStore) -> None:
    """Add the Batch routes (create, list, retrieve, cancel) to ``router``."""

    @router.post("/v1/batches")
    async def create_batch(request: Request) -> Response:
        if fire(state.config, "create_500"):
            raise openai_error(500, "server_error", "Internal server error (emulator fault create_500)")
        return _json(await store.view(await store.create_batch(await _json_body(request))))

    @router.get("/v1/batches")
    async def list_batches(request: Request) -> Response:
        store.list_fault()
        params = request.query_params
        page, has_more = store.list_page(_limit(params.get("limit"), 20, 100), params.get("after"))
        return _json(_listing([await store.view(b) for b in page], has_more))

    @router.get("/v1/batches/{batch_id}")
    async def retrieve_batch(batch_id: str) -> Response:
        store.poll_fault("batch")
        return _json(await store.view(store.get_batch(batch_id)))

    @router.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str) -> Response:
        return _json(await store.view(store.cancel(store.get_batch(batch_id))))


def _add_sync_routes(router: APIRouter, store: OpenAIStore) -> None:
    """Add the synchronous chat completions, responses and embeddings routes to ``router``."""

    async def serve(request: Request, endpoint: str) -> Response:
        result, headers = store.serve(endpoint, await _json_body(request))
        return _json(result, headers=headers)

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await serve(request, "/v1/chat/completions")

    @router.post("/v1/responses")
    async def responses(request: Request) -> Response:
        return await serve(request, "/v1/responses")

    @router.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        return await serve(request, "/v1/embeddings")


def _limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise openai_error(
            400,
            "invalid_request_error",
            f"Invalid 'limit': must be between 1 and {maximum}, got {raw!r}.",
            param="limit",
            code="integer_out_of_range",
        )
    return value


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return _listing(items[:limit], len(items) > limit)


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise openai_error(400, "invalid_request_error", "metadata must be an object.", param="metadata")
    if len(metadata) > 16:
        raise openai_error(
            400,
            "invalid_request_error",
            f"Invalid 'metadata': too many properties. Expected an object with at most 16 properties, "
            f"but got an object with {len(metadata)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise openai_error(
                400,
                "invalid_request_error",
                f"Invalid 'metadata': key {key[:16]!r}... is longer than 64 characters.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(value, str) or len(value) > 512:
            raise openai_error(
                400,
                "invalid_request_error",
                f"Invalid 'metadata.{key}': values must be strings of at most 512 characters.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )


def _check_output_expiry(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise openai_error(
            400,
            "invalid_request_error",
            "output_expires_after.anchor must be 'created_at'.",
            param="output_expires_after.anchor",
        )
    seconds = value.get("seconds")
    if not isinstance(seconds, int) or not MIN_FILE_TTL_S <= seconds <= MAX_FILE_TTL_S:
        raise openai_error(
            400,
            "invalid_request_error",
            "output_expires_after.seconds must be between 3600 (1 hour) and 2592000 (30 days).",
            param="output_expires_after.seconds",
        )
    return seconds
