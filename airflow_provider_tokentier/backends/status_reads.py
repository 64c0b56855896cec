"""Batch status reads for many waits at once: list pages and retrieves decoded with msgspec.

The official async SDK clients still carry every request (auth, headers, retries, base URL);
only the response body is taken raw (``cast_to=bytes``) and decoded into small msgspec structs
holding the few fields a status needs. Building the SDKs' pydantic models was most of the CPU of
a status poll; this decode is several times cheaper, and a list page serves a thousand (Anthropic)
or a hundred (OpenAI) batches per request.
"""

from __future__ import annotations

import datetime
from typing import Any, NamedTuple, Protocol

import msgspec

from airflow_provider_tokentier.backends.base import BatchStatus

#: Anthropic's batch phases onto the provider-neutral ones (anything else counts as running).
_ANTHROPIC_PHASES = {"in_progress": "running", "canceling": "canceling", "ended": "ended"}
_ANTHROPIC_COUNT_KEYS = ("processing", "succeeded", "errored", "expired", "canceled")
_OPENAI_PHASES = {
    "validating": "validating",
    "in_progress": "running",
    "finalizing": "finalizing",
    "cancelling": "canceling",
    "completed": "ended",
    "failed": "ended",
    "expired": "ended",
    "cancelled": "ended",
}
OPENAI_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
# Where the requests OpenAI never reports on end up in `counts` once the batch has ended.
_REMAINDER_BUCKET = {
    "expired": "expired",
    "cancelled": "canceled",
    "completed": "errored",
    "failed": "errored",
}
# Shown in BatchStatus.failure; a failed batch can list one error per input line.
_MAX_FAILURE_ERRORS = 5


def anthropic_status(
    batch_id: str, status: str, counts: dict[str, int | None], created_at: float
) -> BatchStatus:
    """Normalize the fields of an Anthropic ``MessageBatch``."""
    clean = {key: int(counts.get(key) or 0) for key in _ANTHROPIC_COUNT_KEYS}
    return BatchStatus(
        batch_id=batch_id,
        provider="anthropic",
        status=status,
        phase=_ANTHROPIC_PHASES.get(status, "running"),
        ended=status == "ended",
        total=sum(clean.values()),
        counts=clean,
        created_at=created_at,
        failure=None,
    )


def openai_status(
    batch_id: str,
    status: str,
    request_counts: tuple[int, int, int] | None,
    created_at: float,
    errors: list[tuple[str | None, str | None]],
) -> BatchStatus:
    """Normalize the fields of an OpenAI ``Batch``; ``request_counts`` is (total, completed, failed).

    OpenAI reports ``total``/``completed``/``failed``; the rest is derived: unfinished requests
    are ``processing`` while the batch runs, then ``expired``/``canceled`` once it has expired or
    been cancelled (their lines go to the error file).
    """
    ended = status in OPENAI_ENDED
    total, succeeded, errored = request_counts or (0, 0, 0)
    remainder = max(total - succeeded - errored, 0)
    counts = {"processing": 0, "succeeded": succeeded, "errored": errored, "expired": 0, "canceled": 0}
    counts[_REMAINDER_BUCKET[status] if ended else "processing"] += remainder
    failure = None
    if status == "failed":
        parts = [
            f"{code or 'error'}: {message or ''}".strip() for code, message in errors[:_MAX_FAILURE_ERRORS]
        ]
        if len(errors) > _MAX_FAILURE_ERRORS:
            parts.append(f"(+{len(errors) - _MAX_FAILURE_ERRORS} more)")
        failure = "; ".join(parts) or "failed: no error details given"
    return BatchStatus(
        batch_id=batch_id,
        provider="openai",
        status=status,
        phase=_OPENAI_PHASES.get(status, "running"),
        ended=ended,
        total=total,
        counts=counts,
        created_at=created_at,
        failure=failure,
    )


# -- wire shapes: only the fields a status needs; everything else is skipped unparsed ------------
# gc=False: the records hold only scalars and each other, so they cannot form reference cycles;
# the garbage collector need not walk the thousands a poller keeps between reads.


class _AnthropicCounts(msgspec.Struct, frozen=True, gc=False):
    processing: int | None = 0
    succeeded: int | None = 0
    errored: int | None = 0
    canceled: int | None = 0
    expired: int | None = 0


class _AnthropicBatch(msgspec.Struct, frozen=True, gc=False):
    id: str
    processing_status: str
    created_at: str | None = None
    request_counts: _AnthropicCounts | None = None

    def status(self) -> BatchStatus:
        counts = msgspec.structs.asdict(self.request_counts) if self.request_counts is not None else {}
        return anthropic_status(self.id, self.processing_status, counts, _rfc3339(self.created_at))


class _OpenAICounts(msgspec.Struct, frozen=True, gc=False):
    total: int = 0
    completed: int = 0
    failed: int = 0


class _OpenAIError(msgspec.Struct, frozen=True, gc=False):
    code: str | None = None
    message: str | None = None


class _OpenAIErrors(msgspec.Struct, frozen=True, gc=False):
    data: list[_OpenAIError] | None = None


class _OpenAIBatch(msgspec.Struct, frozen=True, gc=False):
    id: str
    status: str
    created_at: float = 0.0
    request_counts: _OpenAICounts | None = None
    errors: _OpenAIErrors | None = None

    def status_of(self) -> BatchStatus:
        rc = self.request_counts
        counts = (rc.total, rc.completed, rc.failed) if rc is not None else None
        errors = [(e.code, e.message) for e in (self.errors.data or [])] if self.errors is not None else []
        return openai_status(self.id, self.status, counts, self.created_at, errors)


class _AnthropicPage(msgspec.Struct, gc=False):
    data: list[_AnthropicBatch]
    has_more: bool = False
    last_id: str | None = None


class _OpenAIPage(msgspec.Struct, gc=False):
    data: list[_OpenAIBatch]
    has_more: bool = False
    last_id: str | None = None


def _rfc3339(value: str | None) -> float:
    if not value:
        return 0.0
    parsed = datetime.datetime.fromisoformat(_trim_fraction(value.replace("Z", "+00:00")))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def _trim_fraction(value: str) -> str:
    # Python 3.10's fromisoformat takes 3 or 6 fractional digits only.
    head, dot, rest = value.partition(".")
    if not dot:
        return value
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return f"{head}.{(rest[:digits] + '000000')[:6]}{rest[digits:]}"


class StatusPage(NamedTuple):
    """One page of a provider's batch listing (newest first), with each batch's raw record.

    ``records`` are hashable wire records: equal records mean an unchanged batch, so a poller
    can keep the `BatchStatus` it built last time instead of building it again.
    """

    records: list[Any]
    last_id: str | None
    has_more: bool


class StatusReader(Protocol):
    """Reads batch statuses of one provider through an async SDK client."""

    provider: str
    #: The most batches one list page may hold.
    page_size: int

    async def page(self, after: str | None) -> StatusPage:
        """The page of (up to ``page_size``) batches created just before ``after`` (newest first)."""
        ...

    async def retrieve(self, batch_id: str) -> Any:
        """One batch's raw record."""
        ...

    def status(self, record: Any) -> BatchStatus:
        """The normalized status of a raw record."""
        ...


class AnthropicStatusReader:
    """``GET /v1/messages/batches`` (1,000 per page, ``after_id``) and ``GET .../{id}``."""

    provider = "anthropic"
    page_size = 1000
    _page_decoder = msgspec.json.Decoder(_AnthropicPage)
    _batch_decoder = msgspec.json.Decoder(_AnthropicBatch)

    def __init__(self, client: Any) -> None:
        self._client = client

    async def page(self, after: str | None) -> StatusPage:
        """The page of batches created just before ``after`` (newest first)."""
        params: dict[str, Any] = {"limit": self.page_size}
        if after is not None:
            params["after_id"] = after
        raw = await self._client.get("/v1/messages/batches", cast_to=bytes, options={"params": params})
        page = self._page_decoder.decode(raw)
        return StatusPage(page.data, page.last_id, page.has_more)

    async def retrieve(self, batch_id: str) -> Any:
        """One batch's raw record."""
        raw = await self._client.get(f"/v1/messages/batches/{batch_id}", cast_to=bytes)
        return self._batch_decoder.decode(raw)

    def status(self, record: Any) -> BatchStatus:
        """The normalized status of a raw record."""
        return record.status()


class OpenAIStatusReader:
    """``GET /v1/batches`` (100 per page, ``after``) and ``GET /v1/batches/{id}``."""

    provider = "openai"
    page_size = 100
    _page_decoder = msgspec.json.Decoder(_OpenAIPage)
    _batch_decoder = msgspec.json.Decoder(_OpenAIBatch)

    def __init__(self, client: Any) -> None:
        self._client = client

    async def page(self, after: str | None) -> StatusPage:
        """The page of batches created just before ``after`` (newest first)."""
        params: dict[str, Any] = {"limit": self.page_size}
        if after is not None:
            params["after"] = after
        raw = await self._client.get("/batches", cast_to=bytes, options={"params": params})
        page = self._page_decoder.decode(raw)
        return StatusPage(page.data, page.last_id, page.has_more)

    async def retrieve(self, batch_id: str) -> Any:
        """One batch's raw record."""
        raw = await self._client.get(f"/batches/{batch_id}", cast_to=bytes)
        return self._batch_decoder.decode(raw)

    def status(self, record: Any) -> BatchStatus:
        """The normalized status of a raw record."""
        return record.status_of()


def status_reader(provider: str, client: Any) -> StatusReader:
    """The status reader for ``provider`` around its async SDK client."""
    if provider == "anthropic":
        return AnthropicStatusReader(client)
    if provider == "openai":
        return OpenAIStatusReader(client)
    raise ValueError(f"unknown provider {provider!r}; expected 'anthropic' or 'openai'")
