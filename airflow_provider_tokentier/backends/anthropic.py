"""Anthropic Message Batches over the official ``anthropic`` SDK (sync and async)."""

from __future__ import annotations

import datetime
import logging
import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import anthropic
import msgspec
from anthropic.types.messages import MessageBatch

from airflow_provider_tokentier.backends.base import (
    READ_CHUNK_SIZE,
    BatchStatus,
    Outcome,
    call_with_retry,
    create_batch_once,
    error_dict,
    is_transient_error,
    is_transient_status,
    is_utf8,
    malformed_outcomes,
    register_backends,
    split_lines,
    stream_result_line_lists,
)
from airflow_provider_tokentier.backends.status_reads import anthropic_status
from airflow_provider_tokentier.core.chunking import ANTHROPIC_CAPS, ProviderCaps
from airflow_provider_tokentier.core.errors import BatchNotEndedError
from airflow_provider_tokentier.core.jsonl import dumps_line, loads_line
from airflow_provider_tokentier.core.pricing import Usage, usage_from_anthropic
from airflow_provider_tokentier.core.result_rows import is_retryable_error
from airflow_provider_tokentier.core.wire_ids import MAX_VERBATIM_ID, rewrite_line

log = logging.getLogger(__name__)

PROVIDER = "anthropic"
_BATCHES_PATH = "/v1/messages/batches"


def _timestamp(value: datetime.datetime | str | None) -> float:
    if value is None:
        return 0.0
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


def batch_status(batch: MessageBatch) -> BatchStatus:
    """Normalize an SDK ``MessageBatch``."""
    raw_counts = batch.request_counts.model_dump() if batch.request_counts is not None else {}
    return anthropic_status(batch.id, str(batch.processing_status), raw_counts, _timestamp(batch.created_at))


class _CacheCreation(msgspec.Struct, gc=False):
    ephemeral_1h_input_tokens: int | None = None


class _MessageUsage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None


class _MessageHead(msgspec.Struct, gc=False):
    """What landing needs from a ``Message``; msgspec skips the rest (content and all) unparsed."""

    usage: _MessageUsage
    model: str | None = None


class _ResultHead(msgspec.Struct, gc=False):
    type: str
    #: The ``Message`` as the bytes it came in: it lands whole, so it is never decoded into dicts.
    message: msgspec.Raw = msgspec.Raw(b"")


class _LineHead(msgspec.Struct, gc=False):
    custom_id: str
    result: _ResultHead


_line_decoder = msgspec.json.Decoder(_LineHead)
_message_decoder = msgspec.json.Decoder(_MessageHead)
_NOT_RUN = {kind: f"the request was {kind} before it was processed" for kind in ("canceled", "expired")}


def parse_result_line(line: bytes) -> Iterator[Outcome]:
    """Turn one results-JSONL line into (normally exactly one) :class:`Outcome`.

    Any line that does not have the documented shape becomes an ``errored`` outcome of type
    ``malformed_result``; this never raises. Succeeded, canceled and expired lines of the plain
    shape are read by :func:`_parse_plain_line`; anything else (errored lines, odd types, bad
    lines) by :func:`_parse_any_line`, which gives the same outcome for every line the first
    accepts.
    """
    return _outcomes(((line,),))


def _outcomes(line_lists: Iterable[Iterable[bytes]]) -> Iterator[Outcome]:
    for lines in line_lists:
        for line in lines:
            outcome = _parse_plain_line(line)
            if outcome is not None:
                yield outcome
            else:
                yield from _parse_any_line(line)


def _parse_plain_line(line: bytes) -> Outcome | None:
    """The outcome of a succeeded/canceled/expired line of the documented shape, else None.

    Only the head of the line is decoded, into typed structs: a count that is not an int, a
    model that is not a string or a line that is not UTF-8 (msgspec skips the message
    unvalidated) is left to :func:`_parse_any_line`, so odd lines keep their exact outcome.
    """
    try:
        head = _line_decoder.decode(line)
        kind = head.result.type
        if not head.custom_id or not (line.isascii() or is_utf8(line)):
            return None
        if kind != "succeeded":
            note = _NOT_RUN.get(kind)
            if note is None:
                return None
            return Outcome(head.custom_id, kind, error=error_dict(kind, note, retryable=True))
        message = head.result.message
        found = _message_decoder.decode(message)
        usage = found.usage
        cache_writes = usage.cache_creation_input_tokens or 0
        one_hour = usage.cache_creation.ephemeral_1h_input_tokens if usage.cache_creation else None
        return Outcome(
            head.custom_id,
            "succeeded",
            body=message,
            usage=Usage(
                input_tokens=usage.input_tokens or 0,
                output_tokens=usage.output_tokens or 0,
                cache_read_tokens=usage.cache_read_input_tokens or 0,
                cache_write_tokens=cache_writes,
                cache_write_1h_tokens=min(one_hour or 0, cache_writes),
            ),
            model=found.model,
        )
    except (msgspec.DecodeError, ValueError):  # ValidationError is a DecodeError; Usage raises ValueError
        return None


def _parse_any_line(line: bytes) -> Iterator[Outcome]:
    """The outcome of any line: decoded whole into dicts and checked field by field."""
    try:
        row = loads_line(line)
        custom_id = row.get("custom_id")
        result = row.get("result")
        if not isinstance(custom_id, str) or not custom_id:
            raise ValueError("no custom_id")
        if not isinstance(result, dict):
            raise ValueError("no result object")
        kind = result.get("type")
        if kind == "succeeded":
            message = result.get("message")
            if not isinstance(message, dict) or not isinstance(message.get("usage"), dict):
                raise ValueError("succeeded without a message with usage")
            model = message.get("model")
            yield Outcome(
                custom_id=custom_id,
                status="succeeded",
                body=msgspec.Raw(dumps_line(message)),
                usage=usage_from_anthropic(message["usage"]),
                model=model if isinstance(model, str) else None,
            )
        elif kind == "errored":
            envelope = result.get("error")
            if not isinstance(envelope, dict):
                raise ValueError("errored without an error object")
            # The documented shape nests the API error envelope: {"type": "error", "error": {...}}.
            nested = envelope.get("error")
            inner: dict[str, Any] = nested if isinstance(nested, dict) else envelope
            error_type = inner.get("type")
            if not isinstance(error_type, str) or not error_type:
                raise ValueError("errored without an error type")
            message_text = inner.get("message")
            yield Outcome(
                custom_id=custom_id,
                status="errored",
                error=error_dict(
                    error_type,
                    message_text if isinstance(message_text, str) else "",
                    retryable=is_retryable_error(PROVIDER, error_type),
                ),
            )
        elif kind in ("canceled", "expired"):
            yield Outcome(
                custom_id=custom_id,
                status=kind,
                error=error_dict(kind, f"the request was {kind} before it was processed", retryable=True),
            )
        else:
            raise ValueError(f"unknown result type {kind!r}")
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        yield from malformed_outcomes(line, str(exc), PROVIDER)


class _RequestsBody:
    """The ``{"requests": [...]}`` body streamed from a JSONL chunk file.

    Re-iterable (each iteration re-reads the file), so the SDK's own retries can resend it; never
    holds more than about one read chunk in memory. One scan counts the requests and fixes the
    exact length; a canonical file (every line one JSON object, newline-terminated, no blank
    lines -- what tokentier writes) is then sent block by block with newlines turned into
    commas, and any other file line by line. With an ``id_scope`` every request goes out with
    its task-scoped wire custom_id (:mod:`core.wire_ids`): in a canonical file whose ids all
    travel verbatim, by one bytes replace per block; otherwise line by line.
    """

    _HEAD = b'{"requests":['
    _TAIL = b"]}"

    def __init__(self, path: pathlib.Path, id_scope: str | None = None) -> None:
        self._path = path
        self._scope = id_scope
        #: What a line start becomes on the wire: the comma before the item and the scoped id.
        self._wire_start = b"" if id_scope is None else b"," + _LINE_HEAD + id_scope.encode("ascii") + b"-"
        self._canonical = True
        newlines = size = 0
        previous = b"\n"
        for block in self._aligned_blocks() if id_scope is not None else self._raw_blocks():
            size += len(block)
            newlines += block.count(b"\n")
            if (
                _NON_VERBATIM_LINE.search(b"\n" + block, 0, len(block))
                if id_scope is not None
                else _BLANK_LINE.search(previous + block)
            ):
                self._canonical = False
                break
            previous = block[-1:]
        self._canonical = self._canonical and size > 0 and previous == b"\n"
        if self._canonical:
            self.request_count = newlines
            grown = newlines * (len(id_scope) + 1) if id_scope is not None else 0
            self._size = len(self._HEAD) + size + grown - 1 + len(self._TAIL)
            return
        count = line_bytes = 0
        for line in self._lines():
            count += 1
            line_bytes += len(line)
        self.request_count = count
        self._size = len(self._HEAD) + line_bytes + max(count - 1, 0) + len(self._TAIL)

    def _aligned_blocks(self) -> Iterator[bytes]:
        """The file in blocks of about ``READ_CHUNK_SIZE`` that end at a line end (the last may not)."""
        with self._path.open("rb") as handle:
            carry = b""
            while block := handle.read(READ_CHUNK_SIZE):
                block = carry + block if carry else block
                cut = block.rfind(b"\n") + 1
                carry = block[cut:]
                if cut:
                    yield block[:cut]
            if carry:
                yield carry

    def _raw_blocks(self) -> Iterator[bytes]:
        with self._path.open("rb") as handle:
            yield from iter(lambda: handle.read(READ_CHUNK_SIZE), b"")

    def _lines(self) -> Iterator[bytes]:
        with self._path.open("rb") as handle:
            lines = split_lines(iter(lambda: handle.read(READ_CHUNK_SIZE), b""))
            for index, line in enumerate(lines):
                yield line.strip() if self._scope is None else rewrite_line(line.strip(), self._scope, index)

    def content_length(self) -> int:
        """Exact body size, so the request is sent with Content-Length rather than chunked."""
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        if self._canonical:
            yield from self._blocks()
            return
        buffer = bytearray(self._HEAD)
        first = True
        for line in self._lines():
            if not first:
                buffer += b","
            buffer += line
            first = False
            if len(buffer) >= READ_CHUNK_SIZE:
                yield bytes(buffer)
                buffer.clear()
        buffer += self._TAIL
        yield bytes(buffer)

    def _blocks(self) -> Iterator[bytes]:
        yield self._HEAD
        if self._scope is not None:
            yield from self._scoped_blocks()
        else:
            pending = b""
            for block in self._raw_blocks():
                if pending:
                    yield pending
                # The file's last newline ends the array instead of separating two items.
                pending = block.replace(b"\n", b",")
            yield pending[:-1]
        yield self._TAIL

    def _scoped_blocks(self) -> Iterator[bytes]:
        """The items of a canonical file whose ids all travel verbatim, by one replace per block.

        Each block is whole lines, and a newline is only ever a line end, so a newline followed
        by the line head marks exactly the line starts: each becomes a comma and the scoped head.
        """
        first = True
        for block in self._aligned_blocks():
            items = (b"\n" + memoryview(block)[:-1]).replace(_LINE_START, self._wire_start)
            yield items[1:] if first else items
            first = False


#: A line start (after its newline) whose custom_id cannot travel verbatim after its scope, or a
#: blank line: the file is then sent line by line.
_NON_VERBATIM_LINE = re.compile(rb'\n(?!\{"custom_id":"[A-Za-z0-9_-]{1,%d}")' % MAX_VERBATIM_ID)
_LINE_HEAD = b'{"custom_id":"'
_LINE_START = b"\n" + _LINE_HEAD
#: A line holding nothing but whitespace, which would leave an empty array item.
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")


class AnthropicBatchBackend:
    """Synchronous Message Batches adapter (submit, poll, stream results, cancel, recover).

    The client's ``max_retries``/``timeout`` apply to every call; this class adds no retry loop
    of its own except around result downloads.
    """

    provider = PROVIDER
    uses_wire_ids = True

    def __init__(self, client: anthropic.Anthropic) -> None:
        self._client = client

    @property
    def limits(self) -> ProviderCaps:
        """Anthropic's per-batch caps."""
        return ANTHROPIC_CAPS

    def submit(
        self,
        chunk_path: pathlib.Path,
        *,
        request_count: int,
        tag: dict[str, str],
        endpoint: str | None = None,
        id_scope: str | None = None,
    ) -> str:
        """Create a batch from a JSONL file of ``{"custom_id", "params"}`` lines; return its id.

        The body is streamed from the file through the SDK's own ``post`` (auth and headers
        kept), so memory stays flat whatever the batch size. Message Batches carry no metadata:
        ``tag`` is not sent (recovery uses ``created_at`` and the request count), and ``endpoint``
        is ignored. With ``id_scope`` the custom_ids go out task-scoped, so the results (and a
        batch found again after a lost submission) can be tied to this chunk. Retries are
        counted here (:func:`create_batch_once`): a call that provably never created a batch
        raises :class:`SubmitNotSentError`.
        """
        body = _RequestsBody(pathlib.Path(chunk_path), id_scope)
        if body.request_count != request_count:
            raise ValueError(
                f"{chunk_path} holds {body.request_count} request lines, but request_count={request_count}"
            )
        if body.request_count == 0:
            raise ValueError(f"{chunk_path} holds no requests")
        client = self._client.with_options(max_retries=0)
        batch = create_batch_once(
            lambda: client.post(
                _BATCHES_PATH,
                cast_to=MessageBatch,
                content=body,
                options={
                    "headers": {
                        "Content-Type": "application/json",
                        "Content-Length": str(body.content_length()),
                    }
                },
            ),
            attempts=self._client.max_retries + 1,
            what=f"creating an anthropic batch from {chunk_path}",
        )
        return batch.id

    def retrieve(self, batch_id: str) -> BatchStatus:
        """Return a normalized snapshot of the batch."""
        return batch_status(self._client.messages.batches.retrieve(batch_id))

    def iter_outcomes(self, batch_id: str) -> Iterator[Outcome]:
        """Stream the outcomes of an ended batch from its ``results_url``.

        Lines are parsed with msgspec rather than the SDK's per-line pydantic models (several
        times faster), and the download is retried/resumed on transient failures.
        """
        what = f"anthropic batch {batch_id} results"
        batch = call_with_retry(
            lambda: self._client.messages.batches.retrieve(batch_id),
            is_transient=is_transient_error,
            what=what,
        )
        if batch.processing_status != "ended" or not batch.results_url:
            raise BatchNotEndedError(f"batch {batch_id} is {batch.processing_status}; it has no results yet")
        results = self._client.messages.batches.with_streaming_response.results
        yield from _outcomes(
            stream_result_line_lists(lambda: results(batch_id), is_transient=is_transient_error, what=what)
        )

    def cancel(self, batch_id: str) -> None:
        """Ask Anthropic to cancel the batch; a batch that already ended is left as is."""
        try:
            self._client.messages.batches.cancel(batch_id)
        except anthropic.APIStatusError as exc:
            if is_transient_status(exc.status_code):
                raise
            if self._client.messages.batches.retrieve(batch_id).processing_status != "ended":
                raise
            log.info("anthropic batch %s already ended; nothing to cancel", batch_id)

    def find_submitted(self, tag: dict[str, str], *, created_after: float, request_count: int) -> list[str]:
        """Return ids of batches created at/after ``created_after`` holding ``request_count`` requests.

        Anthropic batches have no metadata, so ``tag`` cannot be matched; the caller must treat
        more than one match as ambiguous. The listing is newest first, so paging stops at the
        first batch older than ``created_after``.
        """
        del tag  # documented as unusable here; kept for a provider-neutral signature
        matches: list[str] = []
        for batch in self._client.messages.batches.list(limit=100):
            if _timestamp(batch.created_at) < created_after:
                break
            if batch_status(batch).total == request_count:
                matches.append(batch.id)
        return matches


class AsyncAnthropicBatchBackend:
    """Asynchronous poll/cancel for triggers: native ``AsyncAnthropic`` calls, no threads."""

    provider = PROVIDER

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self._client = client

    @property
    def limits(self) -> ProviderCaps:
        """Anthropic's per-batch caps."""
        return ANTHROPIC_CAPS

    async def retrieve(self, batch_id: str) -> BatchStatus:
        """Return a normalized snapshot of the batch."""
        return batch_status(await self._client.messages.batches.retrieve(batch_id))

    async def cancel(self, batch_id: str) -> None:
        """Ask Anthropic to cancel the batch; a batch that already ended is left as is."""
        try:
            await self._client.messages.batches.cancel(batch_id)
        except anthropic.APIStatusError as exc:
            if is_transient_status(exc.status_code):
                raise
            batch = await self._client.messages.batches.retrieve(batch_id)
            if batch.processing_status != "ended":
                raise
            log.info("anthropic batch %s already ended; nothing to cancel", batch_id)


register_backends(PROVIDER, AnthropicBatchBackend, AsyncAnthropicBatchBackend)
