"""OpenAI Files + Batch API over the official ``openai`` SDK (sync and async)."""

from __future__ import annotations

import functools
import logging
import pathlib
from collections.abc import Iterable, Iterator
from typing import Any, cast

import msgspec
import openai
from openai.types import Batch

from airflow_provider_tokentier.backends.base import (
    READ_CHUNK_SIZE,
    BatchStatus,
    Outcome,
    call_with_retry,
    check_request_count,
    create_batch_once,
    error_dict,
    is_transient_error,
    is_transient_status,
    is_utf8,
    malformed_outcomes,
    register_backends,
    split_lines,
    stream_result_line_lists,
    tag_matches,
)
from airflow_provider_tokentier.backends.status_reads import OPENAI_ENDED, openai_status
from airflow_provider_tokentier.core.chunking import OPENAI_CAPS, ProviderCaps
from airflow_provider_tokentier.core.errors import BatchNotEndedError, SubmitNotSentError
from airflow_provider_tokentier.core.jsonl import dumps_line, loads_line
from airflow_provider_tokentier.core.pricing import Usage, usage_from_openai
from airflow_provider_tokentier.core.result_rows import is_retryable_error

log = logging.getLogger(__name__)

PROVIDER = "openai"
_ENDED = OPENAI_ENDED
_METADATA_MAX_PAIRS = 16
_METADATA_MAX_KEY = 64
_METADATA_MAX_VALUE = 512


def batch_status(batch: Batch) -> BatchStatus:
    """Normalize an SDK ``Batch`` (see `status_reads.openai_status`)."""
    rc = batch.request_counts
    counts = (int(rc.total), int(rc.completed), int(rc.failed)) if rc is not None else None
    errors = [(e.code, e.message) for e in (batch.errors.data or [])] if batch.errors is not None else []
    return openai_status(batch.id, str(batch.status), counts, float(batch.created_at), errors)


def _http_error(custom_id: str, status_code: int, body: Any) -> Outcome:
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    error_type = error.get("type") or error.get("code") or f"http_{status_code}"
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"HTTP {status_code}" if status_code else "no response recorded for this request"
    return Outcome(
        custom_id=custom_id,
        status="errored",
        error=error_dict(str(error_type), message, retryable=is_retryable_error(PROVIDER, status_code)),
    )


class _TokenDetails(msgspec.Struct, gc=False):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class _BodyUsage(msgspec.Struct, gc=False):
    """Usage of Chat Completions, Responses or Embeddings: which one is told by ``input_tokens``."""

    input_tokens: int | msgspec.UnsetType | None = msgspec.UNSET
    output_tokens: int | None = None
    input_tokens_details: _TokenDetails | None = None
    output_tokens_details: _TokenDetails | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _TokenDetails | None = None
    completion_tokens_details: _TokenDetails | None = None


class _BodyHead(msgspec.Struct, gc=False):
    """What landing needs from a response body; msgspec skips the rest (choices and all) unparsed."""

    usage: _BodyUsage
    model: str | None = None


class _ResponseHead(msgspec.Struct, gc=False):
    status_code: int
    #: The body as the bytes it came in: it lands whole, so it is never decoded into dicts.
    body: msgspec.Raw = msgspec.Raw(b"")


class _LineHead(msgspec.Struct, gc=False):
    custom_id: str
    response: _ResponseHead | None = None


_line_decoder = msgspec.json.Decoder(_LineHead)
_body_decoder = msgspec.json.Decoder(_BodyHead)


def parse_result_line(line: bytes) -> Iterator[Outcome]:
    """Turn one output- or error-file line into (normally exactly one) :class:`Outcome`.

    Lines that do not have the documented shape become ``errored``/``malformed_result``
    outcomes; this never raises. Status-200 lines with usage are read by
    :func:`_parse_plain_line`; anything else (HTTP errors, error-file lines, bad lines) by
    :func:`_parse_any_line`, which gives the same outcome for every line the first accepts.
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
    """The outcome of a status-200 line whose body has a usage object, else None.

    Only the head of the line is decoded, into typed structs: a count that is not an int, a
    model that is not a string or a line that is not UTF-8 (msgspec skips the body
    unvalidated) is left to :func:`_parse_any_line`, so odd lines keep their exact outcome.
    """
    try:
        head = _line_decoder.decode(line)
        response = head.response
        if (
            response is None
            or response.status_code != 200
            or not head.custom_id
            or not (line.isascii() or is_utf8(line))
        ):
            return None
        found = _body_decoder.decode(response.body)
        usage = found.usage
        if usage.input_tokens is msgspec.UNSET:  # Chat Completions, legacy Completions, Embeddings
            prompt = usage.prompt_tokens or 0
            output = usage.completion_tokens or 0
            cached_in, reasoning_in = usage.prompt_tokens_details, usage.completion_tokens_details
        else:  # Responses API
            prompt = usage.input_tokens or 0
            output = usage.output_tokens or 0
            cached_in, reasoning_in = usage.input_tokens_details, usage.output_tokens_details
        cached = min((cached_in.cached_tokens if cached_in else None) or 0, prompt)
        return Outcome(
            head.custom_id,
            "succeeded",
            body=response.body,
            usage=Usage(
                input_tokens=prompt - cached,
                output_tokens=output,
                cache_read_tokens=cached,
                reasoning_tokens=(reasoning_in.reasoning_tokens if reasoning_in else None) or 0,
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
        if not isinstance(custom_id, str) or not custom_id:
            raise ValueError("no custom_id")
        response = row.get("response")
        error = row.get("error")
        if isinstance(response, dict):
            status_code = response.get("status_code")
            if isinstance(status_code, bool) or not isinstance(status_code, int):
                raise ValueError(f"bad status_code {status_code!r}")
            body = response.get("body")
            if status_code != 200:
                yield _http_error(custom_id, status_code, body)
                return
            if not isinstance(body, dict):
                raise ValueError("status 200 without a body object")
            usage = body.get("usage")
            model = body.get("model")
            # Moderations bodies (the ones with "results") carry no usage; everything else must.
            if not isinstance(usage, dict) and "results" not in body:
                raise ValueError("succeeded without usage")
            yield Outcome(
                custom_id=custom_id,
                status="succeeded",
                body=msgspec.Raw(dumps_line(body)),
                usage=usage_from_openai(usage) if isinstance(usage, dict) else Usage(),
                model=model if isinstance(model, str) else None,
            )
        elif isinstance(error, dict):
            code = error.get("code")
            if not isinstance(code, str) or not code:
                raise ValueError("error without a code")
            message = error.get("message")
            text = message if isinstance(message, str) else ""
            if code == "batch_expired":
                yield Outcome(custom_id, "expired", error=error_dict(code, text, retryable=True))
            elif code == "batch_cancelled":
                yield Outcome(custom_id, "canceled", error=error_dict(code, text, retryable=True))
            else:
                yield Outcome(
                    custom_id,
                    "errored",
                    error=error_dict(code, text, retryable=is_retryable_error(PROVIDER, code)),
                )
        else:
            raise ValueError("neither a response nor an error")
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        yield from malformed_outcomes(line, str(exc), PROVIDER)


def _check_tag(tag: dict[str, str]) -> None:
    if len(tag) > _METADATA_MAX_PAIRS:
        raise ValueError(f"OpenAI batch metadata holds at most {_METADATA_MAX_PAIRS} pairs, got {len(tag)}")
    for key, value in tag.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"OpenAI batch metadata must map str to str, got {key!r}: {value!r}")
        if len(key) > _METADATA_MAX_KEY or len(value) > _METADATA_MAX_VALUE:
            raise ValueError(f"OpenAI batch metadata pair too long: {key[:80]!r}")


def _endpoint_of(path: pathlib.Path) -> str:
    """The ``url`` of the first request line: one batch serves a single endpoint."""
    with path.open("rb") as handle:
        for line in split_lines(iter(lambda: handle.read(READ_CHUNK_SIZE), b"")):
            url = loads_line(line).get("url")
            if not isinstance(url, str) or not url:
                raise ValueError(f"{path}: the first request has no 'url'; pass endpoint=")
            return url
    raise ValueError(f"{path} holds no requests")


class OpenAIBatchBackend:
    """Synchronous Batch API adapter (submit, poll, stream results, cancel, recover).

    The client's ``max_retries``/``timeout`` apply to every call; this class adds no retry loop
    of its own except around result downloads.
    """

    provider = PROVIDER
    uses_wire_ids = False

    def __init__(self, client: openai.OpenAI) -> None:
        self._client = client

    @property
    def limits(self) -> ProviderCaps:
        """OpenAI's per-batch caps."""
        return OPENAI_CAPS

    def submit(
        self,
        chunk_path: pathlib.Path,
        *,
        request_count: int,
        tag: dict[str, str],
        endpoint: str | None = None,
        id_scope: str | None = None,
    ) -> str:
        """Upload a JSONL file of ``{"custom_id", "method", "url", "body"}`` lines and create a batch.

        The file goes up as an open file object, which the HTTP client streams in chunks (a path
        would make the SDK read it whole into memory). ``tag`` becomes the batch ``metadata``,
        which :meth:`find_submitted` matches on, so custom_ids go out as given (``id_scope`` is
        not used); ``endpoint`` defaults to the first line's ``url``. The batch creation counts
        its own retries (:func:`create_batch_once`): one that provably created nothing raises
        :class:`SubmitNotSentError`.
        """
        del id_scope  # the metadata tag already ties a batch to its task
        chunk_path = pathlib.Path(chunk_path)
        _check_tag(tag)
        check_request_count(chunk_path, request_count)
        endpoint = endpoint or _endpoint_of(chunk_path)
        try:
            with chunk_path.open("rb") as handle:
                uploaded = self._client.files.create(
                    file=(chunk_path.name, handle, "application/jsonl"), purpose="batch"
                )
        except openai.OpenAIError as exc:
            # No batch is created before the upload has succeeded.
            raise SubmitNotSentError(
                f"uploading {chunk_path.name} failed, so it created no batch: {exc}"
            ) from exc
        client = self._client.with_options(max_retries=0)
        try:
            batch = create_batch_once(
                lambda: client.batches.create(
                    input_file_id=uploaded.id,
                    endpoint=cast(Any, endpoint),
                    completion_window="24h",
                    metadata=dict(tag) if tag else None,
                ),
                attempts=self._client.max_retries + 1,
                what=f"creating an openai batch from {chunk_path.name}",
            )
        except SubmitNotSentError:
            self._delete_file_quietly(uploaded.id)  # no batch can need it
            raise
        except openai.APIStatusError as exc:
            # A definite rejection leaves an orphan input file; after a 5xx or a dropped
            # connection the batch may exist and need it, so the file is kept then.
            if not is_transient_status(exc.status_code):
                self._delete_file_quietly(uploaded.id)
            raise
        return batch.id

    def _delete_file_quietly(self, file_id: str) -> None:
        try:
            self._client.files.delete(file_id)
        except openai.OpenAIError as exc:
            log.warning("could not delete orphan input file %s: %r", file_id, exc)

    def retrieve(self, batch_id: str) -> BatchStatus:
        """Return a normalized snapshot of the batch."""
        return batch_status(self._client.batches.retrieve(batch_id))

    def iter_outcomes(self, batch_id: str) -> Iterator[Outcome]:
        """Stream the outcomes of an ended batch: its output file, then its error file.

        Expired and cancelled batches keep their finished work in the output file, so both files
        are read whatever the status; a ``failed`` batch yields nothing (its requests never ran).
        """
        batch = call_with_retry(
            lambda: self._client.batches.retrieve(batch_id),
            is_transient=is_transient_error,
            what=f"openai batch {batch_id} status",
        )
        if batch.status not in _ENDED:
            raise BatchNotEndedError(f"batch {batch_id} is {batch.status}; it has no results yet")
        if batch.status == "failed":
            return
        content = self._client.files.with_streaming_response.content
        for kind, file_id in (("output", batch.output_file_id), ("error", batch.error_file_id)):
            if not file_id:
                continue
            yield from _outcomes(
                stream_result_line_lists(
                    functools.partial(content, file_id),
                    is_transient=is_transient_error,
                    what=f"openai batch {batch_id} {kind} file {file_id}",
                )
            )

    def cancel(self, batch_id: str) -> None:
        """Ask OpenAI to cancel the batch; a batch that already ended is left as is."""
        try:
            self._client.batches.cancel(batch_id)
        except openai.APIStatusError as exc:
            if is_transient_status(exc.status_code):
                raise
            if self._client.batches.retrieve(batch_id).status not in _ENDED:
                raise
            log.info("openai batch %s already ended; nothing to cancel", batch_id)

    def find_submitted(self, tag: dict[str, str], *, created_after: float, request_count: int) -> list[str]:
        """Return ids of batches created at/after ``created_after`` whose metadata contains ``tag``.

        The listing is newest first, so paging (``after``) stops at the first older batch.
        ``request_count`` is not compared: a batch still ``validating`` reports 0 requests.
        """
        del request_count
        matches: list[str] = []
        for batch in self._client.batches.list(limit=100):
            if batch.created_at < created_after:
                break
            if tag_matches(cast("dict[str, Any] | None", batch.metadata), tag):
                matches.append(batch.id)
        return matches


class AsyncOpenAIBatchBackend:
    """Asynchronous poll/cancel for triggers: native ``AsyncOpenAI`` calls, no threads."""

    provider = PROVIDER

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self._client = client

    @property
    def limits(self) -> ProviderCaps:
        """OpenAI's per-batch caps."""
        return OPENAI_CAPS

    async def retrieve(self, batch_id: str) -> BatchStatus:
        """Return a normalized snapshot of the batch."""
        return batch_status(await self._client.batches.retrieve(batch_id))

    async def cancel(self, batch_id: str) -> None:
        """Ask OpenAI to cancel the batch; a batch that already ended is left as is."""
        try:
            await self._client.batches.cancel(batch_id)
        except openai.APIStatusError as exc:
            if is_transient_status(exc.status_code):
                raise
            if (await self._client.batches.retrieve(batch_id)).status not in _ENDED:
                raise
            log.info("openai batch %s already ended; nothing to cancel", batch_id)


register_backends(PROVIDER, OpenAIBatchBackend, AsyncOpenAIBatchBackend)
