"""Provider-neutral shapes shared by the batch backends: status snapshots, outcomes, protocols.

Nothing here talks to a provider; the adapters in :mod:`.anthropic` and :mod:`.openai` build these
from the official SDKs so the Airflow layer never sees a provider-specific object.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import pathlib
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar, runtime_checkable

import anthropic
import httpx2
import msgspec
import openai
import tenacity

from airflow_provider_tokentier.core.chunking import ProviderCaps
from airflow_provider_tokentier.core.errors import SubmitNotSentError, UnreadableResultsError
from airflow_provider_tokentier.core.jsonl import loads_line
from airflow_provider_tokentier.core.pricing import Usage

log = logging.getLogger(__name__)

#: The provider-neutral lifecycle phases a :class:`BatchStatus` reports.
PHASES = ("validating", "running", "finalizing", "canceling", "ended")

#: The settled outcomes a request can have in a batch's results.
OUTCOME_STATUSES = ("succeeded", "errored", "expired", "canceled")

#: ``error.type`` of an outcome whose result line could not be parsed or validated.
MALFORMED_RESULT = "malformed_result"

# A malformed line may still carry a readable custom_id; fishing it out with a regex keeps the
# request accounted for (errored, retryable) instead of silently turning into "missing".
_CUSTOM_ID_IN_RAW = re.compile(rb'"custom_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')

# Bytes read per chunk when streaming request files; large enough to keep syscalls rare, small
# enough that memory stays flat whatever the file size.
READ_CHUNK_SIZE = 1 << 20


@dataclasses.dataclass(frozen=True)
class BatchStatus:
    """A normalized snapshot of one provider batch.

    ``status`` is the provider's own word; ``phase`` maps it onto :data:`PHASES` so callers can
    reason about both providers alike. ``counts`` holds the best-known ``processing``,
    ``succeeded``, ``errored``, ``expired`` and ``canceled`` numbers (Anthropic only fills the
    outcome counts once the batch has ended). ``failure`` is set for an OpenAI ``failed`` batch only.
    """

    batch_id: str
    provider: str
    status: str
    phase: str
    ended: bool
    total: int
    counts: dict[str, int]
    created_at: float
    failure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a small JSON-ready dict (it travels in trigger events)."""
        return {
            "batch_id": self.batch_id,
            "provider": self.provider,
            "status": self.status,
            "phase": self.phase,
            "ended": self.ended,
            "total": self.total,
            "counts": dict(self.counts),
            "created_at": self.created_at,
            "failure": self.failure,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchStatus:
        """Rebuild a snapshot from :meth:`to_dict` output (e.g. a trigger event payload)."""
        return cls(
            batch_id=str(data["batch_id"]),
            provider=str(data["provider"]),
            status=str(data["status"]),
            phase=str(data["phase"]),
            ended=bool(data["ended"]),
            total=int(data["total"]),
            counts={str(k): int(v) for k, v in dict(data.get("counts") or {}).items()},
            created_at=float(data["created_at"]),
            failure=data.get("failure"),
        )


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """One request's settled outcome, harvested from a batch's results.

    ``body`` is the provider-native response (an Anthropic ``Message`` or an OpenAI response body)
    for ``succeeded``, as the JSON bytes of the result line: landing copies it into the row without
    decoding it. ``error`` is ``{"type", "message", "retryable"}`` for ``errored`` (and a short note
    for ``expired``/``canceled``). ``usage`` is zero unless the provider billed the request.
    """

    custom_id: str
    status: str
    body: msgspec.Raw | None = None
    error: dict[str, Any] | None = None
    usage: Usage = msgspec.field(default_factory=Usage)
    model: str | None = None

    @property
    def response(self) -> dict[str, Any] | None:
        """``body`` decoded (None when there is none)."""
        return None if self.body is None else loads_line(self.body)


#: Longest error message kept in a result row; providers (or proxies) can send megabytes.
MAX_ERROR_MESSAGE = 2000


def error_dict(error_type: str, message: str, *, retryable: bool) -> dict[str, Any]:
    """Build the result-row ``error`` object, its message cut to :data:`MAX_ERROR_MESSAGE` characters."""
    return {"type": error_type[:200], "message": clip_message(message), "retryable": retryable}


def clip_message(message: str) -> str:
    """``message`` cut to :data:`MAX_ERROR_MESSAGE` characters, saying how much was cut."""
    if len(message) <= MAX_ERROR_MESSAGE:
        return message
    return f"{message[:MAX_ERROR_MESSAGE]}... [{len(message) - MAX_ERROR_MESSAGE} more characters cut]"


def malformed_outcomes(raw: bytes, reason: str, provider: str) -> Iterator[Outcome]:
    """Yield an ``errored``/``malformed_result`` outcome for an unparsable result line.

    The custom_id is recovered from the raw bytes when possible. A line without a readable
    custom_id cannot be attributed: it is logged (never silently dropped) and the caller, which
    knows every id it submitted, reports the unanswered ones as ``missing``.
    """
    match = _CUSTOM_ID_IN_RAW.search(raw)
    if match is None:
        log.warning(
            "%s: dropping a result line without a readable custom_id (%s): %.200r", provider, reason, raw
        )
        return
    yield Outcome(
        custom_id=match.group(1).decode("ascii"),
        status="errored",
        # Retryable: the request itself may be fine; only its result line was unreadable.
        error=error_dict(MALFORMED_RESULT, f"unreadable {provider} result line: {reason}", retryable=True),
    )


def is_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8 (msgspec does not check the values it skips)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a stream of byte chunks into non-blank lines without holding more than one chunk."""
    pending = b""
    for chunk in chunks:
        if not chunk:
            continue
        if pending:
            chunk = pending + chunk
        lines = chunk.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line and not line.isspace():
                yield line
    if pending and not pending.isspace():
        yield pending


#: A line holding nothing or only whitespace (as ``bytes.isspace`` sees it), after its newline.
_BLANK_LINE = re.compile(rb"\n[ \t\r\x0b\x0c]*\n")


def count_lines(path: pathlib.Path) -> int:
    """Count the non-blank lines of a JSONL file (as :func:`split_lines` yields them), streaming it.

    A file without blank lines (what tokentier writes) is counted by its newlines, a block at a
    time; any other is split into lines.
    """
    newlines = 0
    since_newline = b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK_SIZE):
            text = since_newline + chunk
            if _BLANK_LINE.search(text):
                return _count_split_lines(path)
            newlines += chunk.count(b"\n")
            since_newline = text[text.rfind(b"\n") :]
    tail = since_newline[1:]
    return newlines + (1 if tail and not tail.isspace() else 0)


def _count_split_lines(path: pathlib.Path) -> int:
    count = 0
    tail = b""
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK_SIZE):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            count += len(lines) - lines.count(b"") - sum(map(bytes.isspace, lines))
    return count + (1 if tail and not tail.isspace() else 0)


def check_request_count(path: pathlib.Path, request_count: int) -> None:
    """Refuse to submit a chunk file whose line count differs from what the caller recorded."""
    found = count_lines(path)
    if found != request_count:
        raise ValueError(f"{path} holds {found} request lines, but request_count={request_count}")
    if found == 0:
        raise ValueError(f"{path} holds no requests")


class _StreamingResponse(Protocol):
    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]: ...


#: Attempts to start (or resume) a results download before giving up. Each start may take two
#: calls (status, then content), so the budget is generous enough for a flaky status endpoint.
DOWNLOAD_ATTEMPTS = 6

_T = TypeVar("_T")


def call_with_retry(
    fn: Callable[[], _T],
    *,
    is_transient: Callable[[BaseException], bool],
    what: str,
    attempts: int = DOWNLOAD_ATTEMPTS,
) -> _T:
    """Call ``fn``, retrying transient failures with jittered exponential backoff (tenacity).

    Result downloads and the worker-side status checks use this; the trigger has its own backoff.
    """
    return _retrying(attempts, 0.25, is_transient, what)(fn)


def _retrying(
    attempts: int, first_wait_s: float, is_transient: Callable[[BaseException], bool], what: str
) -> tenacity.Retrying:
    """Up to ``attempts`` calls, transient errors retried after a jittered, doubling wait.

    The first wait is ``first_wait_s`` (its jitter too), the longest 16 times that; each retry is
    logged with ``what``.
    """
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        wait=tenacity.wait_exponential_jitter(
            multiplier=first_wait_s, max=16 * first_wait_s, jitter=first_wait_s
        ),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=lambda state: log.warning(
            "%s: retrying after %r", what, state.outcome.exception() if state.outcome else None
        ),
        reraise=True,
    )


def is_transient_status(status_code: int | None) -> bool:
    """True for HTTP statuses worth retrying unchanged: 408, 429 and 5xx (529 included)."""
    return status_code is not None and (status_code in (408, 429) or status_code >= 500)


def stream_result_lines(
    open_stream: Callable[[], AbstractContextManager[_StreamingResponse]],
    *,
    is_transient: Callable[[BaseException], bool],
    what: str,
    attempts: int = DOWNLOAD_ATTEMPTS,
) -> Iterator[bytes]:
    """Yield the non-blank lines of a streamed results file, riding out transient failures.

    ``open_stream`` returns one of the SDKs' streaming-response context managers. Starting the
    download is retried with backoff (tenacity) on transient errors; a connection that breaks
    mid-stream is reopened and the lines already yielded are skipped, which is sound because an
    ended batch's results file never changes. Mid-stream breaks use up the ``attempts`` budget.
    """
    for lines in stream_result_line_lists(
        open_stream, is_transient=is_transient, what=what, attempts=attempts
    ):
        yield from lines


def stream_result_line_lists(
    open_stream: Callable[[], AbstractContextManager[_StreamingResponse]],
    *,
    is_transient: Callable[[BaseException], bool],
    what: str,
    attempts: int = DOWNLOAD_ATTEMPTS,
) -> Iterator[list[bytes]]:
    """`stream_result_lines` a list of lines per chunk downloaded: harvest takes one step per chunk."""
    yielded = 0
    failures = 0
    while True:
        with contextlib.ExitStack() as stack:
            response = call_with_retry(
                lambda: stack.enter_context(open_stream()),
                is_transient=is_transient,
                what=what,
                attempts=attempts - failures,
            )
            skip = yielded
            try:
                for lines in _checked_line_lists(response.iter_bytes(READ_CHUNK_SIZE), what):
                    if skip:
                        if skip >= len(lines):
                            skip -= len(lines)
                            continue
                        lines = lines[skip:]
                        skip = 0
                    yielded += len(lines)
                    yield lines
                return
            except Exception as exc:
                failures += 1
                if not is_transient(exc) or failures >= attempts:
                    raise
                log.warning("%s: stream broke after %d lines (%r); resuming", what, yielded, exc)


def provably_not_created(exc: BaseException) -> bool:
    """True when ``exc`` proves the call created nothing: no connection, or a definite 4xx.

    A timeout, a dropped connection after sending, a 5xx, a 408 or a 409 prove nothing: the
    provider may have created the batch before the answer was lost.
    """
    if isinstance(exc, (anthropic.APITimeoutError, openai.APITimeoutError)):
        return False
    if isinstance(exc, (anthropic.APIConnectionError, openai.APIConnectionError)):
        return isinstance(exc.__cause__, httpx2.ConnectError)
    if isinstance(exc, (anthropic.APIStatusError, openai.APIStatusError)):
        return 400 <= exc.status_code < 500 and exc.status_code not in (408, 409)
    return False


def create_batch_once(call: Callable[[], _T], *, attempts: int, what: str) -> _T:
    """Run a batch-creating call (made with the SDK's own retries off) with bounded retries.

    Transient failures are retried with jittered backoff, as the SDK would; in addition this
    tracks whether any attempt could have reached the provider. When none could, the failure
    is raised as :class:`SubmitNotSentError` (from the last SDK error).
    """
    all_unsent = True

    def attempt() -> _T:
        nonlocal all_unsent
        try:
            return call()
        except Exception as exc:
            all_unsent = all_unsent and provably_not_created(exc)
            raise

    try:
        return _retrying(attempts, 0.5, is_transient_error, what)(attempt)
    except Exception as exc:
        if all_unsent:
            raise SubmitNotSentError(f"{what} created no batch: {type(exc).__name__}: {exc}") from exc
        raise


def _checked_line_lists(chunks: Iterable[bytes], what: str) -> Iterator[list[bytes]]:
    """The non-blank lines of one download, a list per chunk, refusing a body that is not JSONL or was cut.

    The first line must open a JSON object (an HTML error page does not); a last line without
    its newline must parse (a body cut short does not). The last line is held back until the
    body ends so a cut one is never passed on.
    """
    ends_with_newline = True
    pending = b""  # the unfinished line at the end of the chunks so far
    held: bytes | None = None
    for chunk in chunks:
        if not chunk:
            continue
        ends_with_newline = chunk.endswith(b"\n")
        lines = (pending + chunk if pending else chunk).split(b"\n")
        pending = lines.pop()
        lines = [line for line in lines if line and not line.isspace()]
        if not lines:
            continue
        if held is None:
            _check_first_line(lines[0], what)
        else:
            lines.insert(0, held)
        held = lines.pop()
        if lines:
            yield lines
    if pending and not pending.isspace():
        if held is None:
            _check_first_line(pending, what)
        else:
            yield [held]
        held = pending
    if held is None:
        return
    if not ends_with_newline:
        try:
            loads_line(held)
        except ValueError:
            raise UnreadableResultsError(f"{what}: the body ends in the middle of a line") from None
    yield [held]


def _check_first_line(line: bytes, what: str) -> None:
    if not line.lstrip().startswith(b"{"):
        raise UnreadableResultsError(f"{what}: the body is not JSONL (it starts {line[:60]!r})")


def is_transport_error(exc: BaseException) -> bool:
    """True for low-level transport failures raised while a response body is being read."""
    return isinstance(exc, httpx2.TransportError)


def is_transient_error(exc: BaseException) -> bool:
    """True when a call failed in a way worth retrying unchanged.

    That is 408/429/5xx/529 from either provider, a dropped or timed-out connection, or a
    transport error mid-body.
    """
    if isinstance(exc, (anthropic.APIStatusError, openai.APIStatusError)):
        return is_transient_status(exc.status_code)
    transient_types = (
        anthropic.APIConnectionError,
        openai.APIConnectionError,
        asyncio.TimeoutError,
        UnreadableResultsError,
    )
    return isinstance(exc, transient_types) or is_transport_error(exc)


def tag_matches(metadata: dict[str, Any] | None, tag: dict[str, str]) -> bool:
    """True when every ``tag`` pair is present in ``metadata``."""
    if not metadata:
        return not tag
    return all(metadata.get(key) == value for key, value in tag.items())


@runtime_checkable
class BatchBackend(Protocol):
    """A synchronous batch adapter for one provider (used by operators and workers)."""

    provider: str
    #: Whether ``submit(id_scope=...)`` sends task-scoped custom_ids (results then carry them).
    uses_wire_ids: bool

    @property
    def limits(self) -> ProviderCaps:
        """Per-batch caps of this provider."""
        ...

    def submit(
        self,
        chunk_path: pathlib.Path,
        *,
        request_count: int,
        tag: dict[str, str],
        endpoint: str | None = None,
        id_scope: str | None = None,
    ) -> str:
        """Submit one chunk file of provider-native JSONL requests; return the batch id.

        With ``id_scope`` the custom_ids go out task-scoped (see :mod:`core.wire_ids`) where the
        provider supports it; ``uses_wire_ids`` says whether it does.
        """
        ...

    def retrieve(self, batch_id: str) -> BatchStatus:
        """Return a normalized snapshot of the batch."""
        ...

    def iter_outcomes(self, batch_id: str) -> Iterator[Outcome]:
        """Stream the settled outcomes of an ended batch."""
        ...

    def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch (no error if it already ended)."""
        ...

    def find_submitted(self, tag: dict[str, str], *, created_after: float, request_count: int) -> list[str]:
        """Return ids of batches that may be a lost submission of this chunk."""
        ...


@runtime_checkable
class AsyncBatchBackend(Protocol):
    """The asynchronous subset the triggers need: poll and cancel without blocking the loop."""

    provider: str

    @property
    def limits(self) -> ProviderCaps:
        """Per-batch caps of this provider."""
        ...

    async def retrieve(self, batch_id: str) -> BatchStatus:
        """Return a normalized snapshot of the batch."""
        ...

    async def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch (no error if it already ended)."""
        ...


#: provider name -> (sync backend class, async backend class). Each backend module registers
#: its pair with `register_backends`; the ``backends`` package imports every backend module, so
#: the registry is full whenever this module is importable.
_BACKENDS: dict[str, tuple[Callable[[Any], BatchBackend], Callable[[Any], AsyncBatchBackend]]] = {}


def register_backends(
    provider: str, sync: Callable[[Any], BatchBackend], async_: Callable[[Any], AsyncBatchBackend]
) -> None:
    """Make ``provider``'s sync and async backends reachable through `batch_backend`."""
    _BACKENDS[provider] = (sync, async_)


def _registered(provider: str) -> tuple[Callable[[Any], BatchBackend], Callable[[Any], AsyncBatchBackend]]:
    if provider not in _BACKENDS:
        expected = " or ".join(repr(name) for name in sorted(_BACKENDS))
        raise ValueError(f"unknown provider {provider!r}; expected {expected}")
    return _BACKENDS[provider]


def batch_backend(provider: str, client: Any) -> BatchBackend:
    """Return the sync backend for ``provider`` ("anthropic" or "openai") around an SDK client."""
    return _registered(provider)[0](client)


def async_batch_backend(provider: str, client: Any) -> AsyncBatchBackend:
    """Return the async backend for ``provider`` around an async SDK client."""
    return _registered(provider)[1](client)
