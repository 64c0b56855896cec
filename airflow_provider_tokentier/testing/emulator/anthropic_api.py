"""The Anthropic half of the emulator: ``/v1/messages`` and the Message Batches API.

Shapes follow the official SDK types (``anthropic.types.Message``,
``anthropic.types.messages.MessageBatch`` and ``MessageBatchIndividualResponse``) so the SDK works
unchanged against ``base_url``. A batch's story is fixed at creation by
`simulation.plan_batch`; every read derives the status from the virtual clock. The first read that
sees a batch ended writes its results JSONL to the spool (once, on a worker thread) and bills the
succeeded requests at the batch tier.

Request lines are spooled to disk at creation, so a 100,000-request batch keeps only its timeline
and line offsets in memory, and results are streamed from disk in 1 MB chunks.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import mmap
import random
import re
import shutil
import threading
import uuid
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from airflow_provider_tokentier.core.pricing import Usage, usage_from_anthropic
from airflow_provider_tokentier.testing.emulator.errors import ProviderError, anthropic_error
from airflow_provider_tokentier.testing.emulator.faults import faulty_results, fire
from airflow_provider_tokentier.testing.emulator.simulation import (
    ERROR,
    EXPIRE,
    BatchTimeline,
    estimate_tokens,
    plan_batch,
    synth_text,
)
from airflow_provider_tokentier.testing.emulator.state import EmulatorState

#: Limits of one Message Batch.
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
#: Results stay downloadable this long after the batch ends; then ``archived_at`` is set.
RESULTS_RETENTION_S = 29 * 24 * 3600.0
#: At most this many content blocks may carry ``cache_control`` in one request.
MAX_CACHE_BREAKPOINTS = 4
CACHE_TTL_S = {"5m": 300.0, "1h": 3600.0}

_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_CHUNK = 1024 * 1024
_JSON = "application/json"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


# -- request envelopes (decoded with msgspec; params stay raw bytes) ------------------------------


class _BatchItem(msgspec.Struct, forbid_unknown_fields=True):
    custom_id: Any
    params: msgspec.Raw


class _BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    requests: list[_BatchItem] | None = None


class _ParamsProbe(msgspec.Struct):
    """Only what create must check in each request's params; other fields are skipped unparsed."""

    stream: Any = None


def _bad_request(message: str) -> ProviderError:
    return anthropic_error(400, "invalid_request_error", message)


def _not_found(batch_id: str) -> ProviderError:
    return anthropic_error(404, "not_found_error", f"Message Batch {batch_id!r} not found.")


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(payload: Any, status: int = 200) -> Response:
    headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
    return Response(_encode(payload), status_code=status, media_type=_JSON, headers=headers)


# -- the prompt: validation, token counts, prompt caching ----------------------------------------


def validate_params(params: Any) -> str | None:
    """Why a non-streaming Messages body is invalid (the API's wording), or None when it is fine."""
    if not isinstance(params, dict):
        return "body: Input should be a valid dictionary"
    for name in ("model", "max_tokens", "messages"):
        if name not in params:
            return f"{name}: Field required"
    problem = _scalar_problem(params) or _messages_problem(params["messages"])
    if problem is not None:
        return problem
    system = params.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string or list of text blocks"
    if params.get("stream") is True:
        return "stream: streaming is not supported by the tokentier emulator"
    breakpoints = _count_breakpoints(params)
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        return (
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {breakpoints}."
        )
    return None


def _scalar_problem(params: dict[str, Any]) -> str | None:
    """Why the required ``model`` or ``max_tokens`` of a Messages body is invalid, or None."""
    model = params["model"]
    if not isinstance(model, str) or not model:
        return "model: Input should be a valid string"
    max_tokens = params["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    return None


def _messages_problem(messages: Any) -> str | None:
    """Why the ``messages`` of a Messages body is invalid, or None."""
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        problem = _message_problem(i, message)
        if problem is not None:
            return problem
    return None


def _message_problem(i: int, message: Any) -> str | None:
    """Why message ``i`` of a Messages body is invalid, or None."""
    if not isinstance(message, dict):
        return f"messages.{i}: Input should be a valid dictionary"
    if message.get("role") not in ("user", "assistant"):
        return f"messages.{i}.role: Input should be 'user' or 'assistant'"
    content = message.get("content")
    if not isinstance(content, str | list):
        return f"messages.{i}.content: Input should be a valid string or list of content blocks"
    if isinstance(content, list):
        for j, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                return f"messages.{i}.content.{j}: Input should be a valid content block"
    return None


def _count_breakpoints(params: Mapping[str, Any]) -> int:
    return sum(1 for _text, cache in _segments(params) if cache is not None)


def _block_text(block: Any) -> str:
    """The text a content block contributes to the prompt."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return str(block)
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "thinking":
        return str(block.get("thinking", ""))
    if kind == "tool_use":
        return f"{block.get('name', '')} {_encode(block.get('input', {})).decode()}"
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, list):
            return "\n".join(_block_text(b) for b in content)
        return str(content)
    return f"[{kind}]"


def _segments(params: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    """The prompt in cache order (tools, system, messages): (text, cache ttl or None) per block."""
    tools = params.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            yield _encode(tool).decode(), _ttl(tool)
    system = params.get("system")
    if isinstance(system, str):
        yield system, None
    elif isinstance(system, list):
        for block in system:
            yield _block_text(block), _ttl(block)
    for message in params.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield content, None
        elif isinstance(content, list):
            for block in content:
                yield _block_text(block), _ttl(block)


def _ttl(block: Any) -> str | None:
    if not isinstance(block, dict):
        return None
    control = block.get("cache_control")
    if not isinstance(control, dict):
        return None
    return "1h" if control.get("ttl") == "1h" else "5m"


@dataclass
class _Prompt:
    #: System and message text (what the synthetic reply is derived from).
    text: str
    total_tokens: int
    #: (tokens up to and including the block, prefix hash, ttl) for each cache breakpoint.
    breakpoints: list[tuple[int, bytes, str]]


def _prompt_of(params: Mapping[str, Any]) -> _Prompt:
    texts: list[str] = []
    reply_parts: list[str] = []
    breakpoints: list[tuple[int, bytes, str]] = []
    hasher = hashlib.blake2b(str(params.get("model")).encode(), digest_size=16)
    n_tools = len(params["tools"]) if isinstance(params.get("tools"), list) else 0
    for index, (text, ttl) in enumerate(_segments(params)):
        texts.append(text)
        if index >= n_tools:
            reply_parts.append(text)
        hasher.update(b"\x1e" + text.encode())
        if ttl is not None:
            breakpoints.append((estimate_tokens("\n".join(texts)), hasher.copy().digest(), ttl))
    full = "\n".join(texts)
    return _Prompt("\n".join(reply_parts), estimate_tokens(full), breakpoints)


class _PromptCache:
    """Prompt-cache prefixes the emulated API has seen, with their virtual expiry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[bytes, float] = {}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def usage(self, prompt: _Prompt, now: float) -> dict[str, int]:
        """Split the prompt's tokens into uncached, cache-read and cache-written (5 m / 1 h)."""
        if not prompt.breakpoints:
            return {"input_tokens": prompt.total_tokens, "read": 0, "write_5m": 0, "write_1h": 0}
        with self._lock:
            hit = -1
            for i, (_tokens, key, _ttl) in enumerate(prompt.breakpoints):
                if self._entries.get(key, -1.0) >= now:
                    hit = i
            read = prompt.breakpoints[hit][0] if hit >= 0 else 0
            written = {"5m": 0, "1h": 0}
            previous = read
            for i, (tokens, key, ttl) in enumerate(prompt.breakpoints):
                if i > hit:
                    written[ttl] += max(0, tokens - previous)
                    previous = max(previous, tokens)
                self._entries[key] = max(self._entries.get(key, 0.0), now + CACHE_TTL_S[ttl])
        cached = prompt.breakpoints[-1][0]
        return {
            "input_tokens": max(0, prompt.total_tokens - max(cached, read)),
            "read": read,
            "write_5m": written["5m"],
            "write_1h": written["1h"],
        }


def _message(
    params: Mapping[str, Any],
    message_id: str,
    tier: str,
    cache: _PromptCache,
    now: float,
) -> dict[str, Any]:
    """A complete ``Message`` for a valid params dict."""
    prompt = _prompt_of(params)
    max_tokens = int(params["max_tokens"])
    text, out_tokens = synth_text(prompt.text, max_tokens)
    stop_reason = "end_turn"
    if out_tokens == max_tokens and synth_text(prompt.text, max_tokens + 1)[1] > max_tokens:
        stop_reason = "max_tokens"
    split = cache.usage(prompt, now)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": split["input_tokens"],
            "output_tokens": out_tokens,
            "cache_creation_input_tokens": split["write_5m"] + split["write_1h"],
            "cache_read_input_tokens": split["read"],
            "cache_creation": {
                "ephemeral_5m_input_tokens": split["write_5m"],
                "ephemeral_1h_input_tokens": split["write_1h"],
            },
            "service_tier": tier,
        },
    }


def _hash_id(prefix: str, *parts: object, length: int = 24) -> str:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()
    return f"{prefix}{digest[:length]}"


# -- batches ------------------------------------------------------------------------------------


@dataclass
class _Batch:
    id: str
    seq: int
    created_at: float
    count: int
    timeline: BatchTimeline
    directory: Path
    #: Byte offset of each request line in ``requests.jsonl`` (dropped once results exist).
    offsets: array[int] | None
    cancel_at: float | None = None
    #: Outcome counts, set once the results file is written.
    counts: dict[str, int] | None = None
    cancel_latency_s: float = 0.0
    materializing: asyncio.Future[None] | None = None

    @property
    def requests_path(self) -> Path:
        return self.directory / "requests.jsonl"

    @property
    def results_path(self) -> Path:
        return self.directory / "results.jsonl"

    @property
    def expires_at(self) -> float:
        return self.timeline.expires_at

    def ended_at(self) -> float:
        """When processing ends (possibly in the future)."""
        if self.cancel_at is not None:
            return self._cancel_end
        return self.timeline.all_done_at

    @property
    def _cancel_end(self) -> float:
        assert self.cancel_at is not None
        return min(self.cancel_at + self.cancel_latency_s, self.expires_at)

    def status(self, now: float) -> str:
        if now >= self.ended_at():
            return "ended"
        return "canceling" if self.cancel_at is not None else "in_progress"

    def outcome(self, index: int) -> str:
        """How request ``index`` ends: succeeded, errored, canceled or expired (params aside)."""
        fate = self.timeline.fates[index]
        finish = self.timeline.finish_at[index]
        if self.cancel_at is not None and finish > self.cancel_at:
            return "canceled"
        if fate == EXPIRE:
            return "expired"
        return "errored" if fate == ERROR else "succeeded"


class AnthropicStore:
    """Every Message Batch the emulated Anthropic API knows, plus its prompt cache."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.cache = _PromptCache()
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every batch, the list order and the prompt cache."""
        with self._lock:
            self.batches: dict[str, _Batch] = {}
            #: Creation order of every id ever issued (deleted ones too, so cursors keep working).
            self.order: list[str] = []
            self.seq_of: dict[str, int] = {}
            self.fault_n = 0
        self.cache.clear()

    def summary(self) -> list[dict[str, Any]]:
        """One line per batch (id, creation time, size, status) for the admin endpoint."""
        now = self.state.clock.now()
        return [
            {
                "id": b.id,
                "created_at": b.created_at,
                "request_count": b.count,
                "processing_status": b.status(now),
            }
            for b in list(self.batches.values())
        ]

    # -- lookups -------------------------------------------------------------------------------
    def get(self, batch_id: str) -> _Batch:
        """The batch with ``batch_id``; a 404 ``not_found_error`` if there is none."""
        batch = self.batches.get(batch_id)
        if batch is None:
            raise _not_found(batch_id)
        return batch

    def poll_fault(self, what: str) -> None:
        """Answer a status or results call with a transient 529 / 500 at ``poll_error_rate``."""
        self._fault(self.state.config.poll_error_rate, what)

    def _fault(self, rate: float, what: str) -> None:
        if rate <= 0 or self.state.next_draw("anthropic", what) >= rate:
            return
        with self._lock:
            n = self.fault_n
            self.fault_n += 1
        if n % 2 == 0:
            raise anthropic_error(529, "overloaded_error", "Overloaded")
        raise anthropic_error(500, "api_error", "Internal server error")

    # -- create --------------------------------------------------------------------------------
    def create(self, body: bytes) -> _Batch:
        """Validate, spool and plan a batch (runs on a worker thread)."""
        try:
            envelope = msgspec.json.decode(body, type=_BatchBody)
        except msgspec.ValidationError as exc:
            raise _bad_request(_msgspec_message(exc)) from None
        except msgspec.DecodeError as exc:
            raise _bad_request(f"Invalid JSON in request body: {exc}") from None
        if envelope.requests is None:
            raise _bad_request("requests: Field required")
        items = envelope.requests
        del envelope
        if not items:
            raise _bad_request("requests: List should have at least 1 item after validation, not 0")
        if len(items) > MAX_BATCH_REQUESTS:
            raise _bad_request(
                f"requests: List should have at most {MAX_BATCH_REQUESTS} items after validation, "
                f"not {len(items)}"
            )
        seen: set[str] = set()
        for i, item in enumerate(items):
            cid = item.custom_id
            if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
                raise _bad_request(
                    f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )
            if cid in seen:
                raise _bad_request(
                    f"Duplicate custom_id {cid!r}: each request in a batch needs a unique custom_id."
                )
            seen.add(cid)
            try:
                probe = msgspec.json.decode(item.params, type=_ParamsProbe)
            except msgspec.ValidationError:
                raise _bad_request(f"requests.{i}.params: Input should be a valid dictionary") from None
            if probe.stream is True:
                raise _bad_request(
                    f"requests.{i}.params.stream: Message Batches do not support streaming requests."
                )
        del seen
        state = self.state
        batch_id = state.new_id("msgbatch_")
        created_at = state.clock.now()
        directory = state.spool_dir / "anthropic" / batch_id
        directory.mkdir(parents=True, exist_ok=True)
        offsets = array("q")
        position = 0
        with (directory / "requests.jsonl").open("wb", buffering=_CHUNK) as out:
            for item in items:
                line = b'{"custom_id":%s,"params":%s}\n' % (_encode(item.custom_id), bytes(item.params))
                offsets.append(position)
                position += out.write(line)
        timeline = plan_batch(state, batch_id, (item.custom_id for item in items), created_at)
        count = len(items)
        del items
        with self._lock:
            seq = len(self.order)
            batch = _Batch(
                batch_id,
                seq,
                created_at,
                count,
                timeline,
                directory,
                offsets,
            )
            self.batches[batch_id] = batch
            self.order.append(batch_id)
            self.seq_of[batch_id] = seq
        return batch

    # -- results -------------------------------------------------------------------------------
    async def ensure_results(self, batch: _Batch) -> None:
        """Write the results file and bill the batch, once, on a worker thread."""
        if batch.counts is not None:
            return
        if batch.materializing is None:
            loop = asyncio.get_running_loop()
            batch.materializing = loop.run_in_executor(None, self._materialize, batch)
            batch.materializing.add_done_callback(_swallow)
        await asyncio.shield(batch.materializing)

    def _materialize(self, batch: _Batch) -> None:
        state = self.state
        ended_at = batch.ended_at()
        counts = {"succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        order = list(range(batch.count))
        random.Random(f"{state.config.seed}:{batch.id}:order").shuffle(order)
        offsets = batch.offsets
        assert offsets is not None
        tmp = batch.directory / "results.jsonl.tmp"
        with (
            batch.requests_path.open("rb") as source,
            mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as requests,
            tmp.open("wb", buffering=_CHUNK) as out,
        ):
            for index in order:
                start = offsets[index]
                end = requests.find(b"\n", start)
                line = _decode(requests[start:end])
                custom_id = line["custom_id"]
                result, usage_model = self._result(batch, index, custom_id, line["params"], ended_at)
                counts[result["type"]] += 1
                out.write(_encode({"custom_id": custom_id, "result": result}))
                out.write(b"\n")
                if usage_model is not None:
                    model, usage = usage_model
                    state.billing.charge("anthropic", model, "batch", usage)
        tmp.replace(batch.results_path)
        batch.offsets = None
        batch.counts = counts

    def _result(
        self, batch: _Batch, index: int, custom_id: str, params: Any, ended_at: float
    ) -> tuple[dict[str, Any], tuple[str, Usage] | None]:
        outcome = batch.outcome(index)
        if outcome in ("canceled", "expired"):
            return {"type": outcome}, None
        seed = self.state.config.seed
        request_id = _hash_id("req_", seed, batch.id, custom_id, "request")
        problem = validate_params(params)
        if problem is not None:
            return _errored("invalid_request_error", problem, request_id), None
        if outcome == "errored":
            if self.state.unit(batch.id, custom_id, "error_type") < 0.5:
                return _errored("api_error", "Internal server error", request_id), None
            return _errored("overloaded_error", "Overloaded", request_id), None
        finished = min(batch.timeline.finish_at[index], ended_at)
        message = _message(params, _hash_id("msg_", seed, batch.id, custom_id), "batch", self.cache, finished)
        return {"type": "succeeded", "message": message}, (
            str(params["model"]),
            usage_from_anthropic(message["usage"]),
        )

    def view(self, batch: _Batch, now: float, base_url: str) -> dict[str, Any]:
        """The ``MessageBatch`` object at virtual time ``now`` (results must exist once ended)."""
        status = batch.status(now)
        ended_at = batch.ended_at() if status == "ended" else None
        archived_at = None
        if ended_at is not None and now >= ended_at + RESULTS_RETENTION_S:
            archived_at = ended_at + RESULTS_RETENTION_S
        if status == "ended":
            assert batch.counts is not None
            counts = {"processing": 0, **batch.counts}
            results_url = f"{base_url}/v1/messages/batches/{batch.id}/results"
        else:
            counts = {"processing": batch.count, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
            results_url = None
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": _rfc3339(ended_at),
            "created_at": _rfc3339(batch.created_at),
            "expires_at": _rfc3339(batch.expires_at),
            "archived_at": _rfc3339(archived_at),
            "cancel_initiated_at": _rfc3339(batch.cancel_at),
            "results_url": results_url,
        }

    async def render(self, batch: _Batch, base_url: str) -> dict[str, Any]:
        """The ``MessageBatch`` object now, writing its results first if it has ended."""
        now = self.state.clock.now()
        if batch.status(now) == "ended":
            await self.ensure_results(batch)
        return self.view(batch, now, base_url)

    # -- list, cancel, results, delete ------------------------------------------------------------
    def list_page(self, limit: int, before_id: str | None, after_id: str | None) -> tuple[list[_Batch], bool]:
        """One page of the newest-first listing and whether more lie beyond it.

        ``after_id`` pages towards older batches, ``before_id`` towards newer ones; the walk starts
        at the cursor's place in the creation order, so a page costs O(limit), not O(all batches).
        """
        if before_id and after_id:
            raise _bad_request("Provide only one of before_id and after_id.")
        cursor = before_id or after_id
        with self._lock:
            order = self.order
            if cursor:
                pivot = self.seq_of.get(cursor)
                if pivot is None:
                    raise _bad_request(f"Invalid cursor {cursor!r}.")
            else:
                pivot = len(order)
            # Older batches sit at lower positions; before_id walks upwards, towards the newest.
            step, start = (1, pivot + 1) if before_id else (-1, pivot - 1)
            page: list[_Batch] = []
            index = start
            while 0 <= index < len(order) and len(page) <= limit:
                batch = self.batches.get(order[index])
                if batch is not None:
                    page.append(batch)
                index += step
        has_more = len(page) > limit
        page = page[:limit]
        if before_id:
            page.reverse()  # still newest first, ending just before the cursor
        return page, has_more

    def list_fault(self) -> None:
        """Answer a list call with a transient 529 / 500 at ``list_error_rate``."""
        self._fault(self.state.config.list_error_rate, "list")

    def cancel(self, batch: _Batch) -> _Batch:
        """Start canceling ``batch`` (a no-op while it is already canceling)."""
        now = self.state.clock.now()
        status = batch.status(now)
        if status == "ended":
            raise _bad_request(f"Message Batch {batch.id!r} has already ended and cannot be canceled.")
        if status == "in_progress":
            batch.cancel_latency_s = self.state.config.cancel_latency_s
            batch.cancel_at = now
        return batch

    async def results_of(self, batch: _Batch) -> _Batch:
        """``batch`` with its results file written, or the API's error when there is none to read."""
        now = self.state.clock.now()
        if batch.status(now) != "ended":
            raise _bad_request(
                f"Message Batch {batch.id!r} has not finished processing; results are available "
                "once processing_status is 'ended'."
            )
        if now >= batch.ended_at() + RESULTS_RETENTION_S:
            raise anthropic_error(
                404, "not_found_error", f"The results of Message Batch {batch.id!r} have been archived."
            )
        await self.ensure_results(batch)
        return batch

    async def delete(self, batch: _Batch) -> None:
        """Delete an ended batch and its files."""
        if batch.status(self.state.clock.now()) != "ended":
            raise _bad_request(
                f"Message Batch {batch.id!r} cannot be deleted while it is processing; cancel it first."
            )
        # Deleting is a read too: the batch ran, so its results exist and are billed first.
        await self.ensure_results(batch)
        with self._lock:
            self.batches.pop(batch.id, None)
        shutil.rmtree(batch.directory, ignore_errors=True)


def _list_limit(raw: str | None) -> int:
    try:
        limit = int(raw or "20")
    except ValueError:
        raise _bad_request("limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise _bad_request("limit: Input should be between 1 and 1000")
    return limit


def _swallow(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _errored(kind: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id},
    }


def _msgspec_message(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if "Object contains unknown field" in text:
        return f"{text}: Extra inputs are not permitted"
    return text


def _stream_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            yield chunk


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _read_body(request: Request, limit: int | None = None) -> bytes:
    if limit is not None:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise anthropic_error(
                413, "request_too_large", f"Request exceeds the maximum size of {limit} bytes."
            )
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) > limit:
                raise anthropic_error(
                    413, "request_too_large", f"Request exceeds the maximum size of {limit} bytes."
                )
        return bytes(buffer)
    return await request.body()


def build_router(state: EmulatorState) -> APIRouter:
    """Routes of the emulated Anthropic API, backed by a store registered on ``state``."""
    store = AnthropicStore(state)
    state.register_store("anthropic", store)
    router = APIRouter()
    _add_message_route(router, state, store)
    _add_batch_routes(router, state, store)
    return router


def _add_message_route(router: APIRouter, state: EmulatorState, store: AnthropicStore) -> None:
    """Add the synchronous ``POST /v1/messages`` route to ``router``."""

    @router.post("/v1/messages")
    async def create_message(request: Request) -> Response:
        body = await _read_body(request)
        try:
            params = _decode(body)
        except msgspec.DecodeError as exc:
            raise _bad_request(f"Invalid JSON in request body: {exc}") from None
        if isinstance(params, dict) and params.get("stream") is True:
            raise _bad_request("stream: streaming responses are not supported by the tokentier emulator")
        problem = validate_params(params)
        if problem is not None:
            raise _bad_request(problem)
        message = _message(params, state.new_id("msg_"), "standard", store.cache, state.clock.now())
        state.billing.charge(
            "anthropic", str(params["model"]), "standard", usage_from_anthropic(message["usage"])
        )
        return _json(message)


def _add_batch_routes(router: APIRouter, state: EmulatorState, store: AnthropicStore) -> None:
    """Add the Message Batches routes (create, list, retrieve, results, cancel, delete) to ``router``."""

    @router.post("/v1/messages/batches")
    async def create_batch(request: Request) -> Response:
        if fire(state.config, "create_500"):
            raise anthropic_error(500, "api_error", "Internal server error (emulator fault create_500)")
        body = await _read_body(request, MAX_BATCH_BYTES)
        batch = await run_in_threadpool(store.create, body)
        del body
        return _json(await store.render(batch, _base_url(request)))

    @router.get("/v1/messages/batches")
    async def list_batches(request: Request) -> Response:
        store.list_fault()
        query = request.query_params
        page, has_more = store.list_page(
            _list_limit(query.get("limit")), query.get("before_id"), query.get("after_id")
        )
        base = _base_url(request)
        data = [await store.render(b, base) for b in page]
        return _json(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    @router.get("/v1/messages/batches/{batch_id}")
    async def retrieve_batch(batch_id: str, request: Request) -> Response:
        store.poll_fault("retrieve")
        batch = store.get(batch_id)
        return _json(await store.render(batch, _base_url(request)))

    @router.get("/v1/messages/batches/{batch_id}/results")
    async def batch_results(batch_id: str) -> Response:
        store.poll_fault("results")
        batch = await store.results_of(store.get(batch_id))
        hostile = faulty_results(state.config, batch.results_path, "anthropic", "application/binary")
        if hostile is not None:
            return hostile
        return StreamingResponse(_stream_file(batch.results_path), media_type="application/binary")

    @router.post("/v1/messages/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, request: Request) -> Response:
        batch = store.cancel(store.get(batch_id))
        return _json(await store.render(batch, _base_url(request)))

    @router.delete("/v1/messages/batches/{batch_id}")
    async def delete_batch(batch_id: str) -> Response:
        await store.delete(store.get(batch_id))
        return _json({"id": batch_id, "type": "message_batch_deleted"})


__all__ = ["AnthropicStore", "build_router", "validate_params"]
