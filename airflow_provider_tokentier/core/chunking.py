"""Split a stream of serialized request lines into batches that fit the providers' caps.

The :class:`Chunker` sees one line at a time and only keeps counters, so a caller can write each
chunk straight to a file::

    chunker = Chunker.for_provider("openai", max_requests=override_or_none)
    for row in iter_validated(rows, "openai", endpoint="/v1/embeddings"):
        line = serialize_request(row, "openai")
        if chunker.add(row["custom_id"], line, count_embedding_inputs(row)):
            ...  # close the current chunk's file (if any) and open the next one
        ...  # write the line, framed with chunker.framing
    stats = chunker.chunks()
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from airflow_provider_tokentier.core.jsonl import dumps_line
from airflow_provider_tokentier.core.requests import PROVIDERS, RequestValidationError

DEFAULT_SAFETY_MARGIN = 0.95
_CHARS_PER_TOKEN = 4


@dataclasses.dataclass(frozen=True)
class ProviderCaps:
    """The most one batch may hold. ``max_embedding_inputs`` is ``None`` where no such cap exists."""

    max_requests: int
    max_bytes: int
    max_embedding_inputs: int | None = None

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ValueError(f"caps must be positive: {self}")
        if self.max_embedding_inputs is not None and self.max_embedding_inputs < 1:
            raise ValueError(f"caps must be positive: {self}")

    def with_overrides(
        self,
        *,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        max_embedding_inputs: int | None = None,
    ) -> ProviderCaps:
        """Return caps with the given limits replaced (``None`` keeps the current one)."""
        return ProviderCaps(
            max_requests=self.max_requests if max_requests is None else max_requests,
            max_bytes=self.max_bytes if max_bytes is None else max_bytes,
            max_embedding_inputs=(
                self.max_embedding_inputs if max_embedding_inputs is None else max_embedding_inputs
            ),
        )


ANTHROPIC_CAPS = ProviderCaps(max_requests=100_000, max_bytes=256 * 1024 * 1024)
# "200 MB" is not specified as decimal or binary; the safety margin covers both readings.
OPENAI_CAPS = ProviderCaps(max_requests=50_000, max_bytes=200 * 1024 * 1024, max_embedding_inputs=50_000)


@dataclasses.dataclass(frozen=True)
class Framing:
    """How lines are assembled into what the byte cap applies to.

    assembled = prefix + separator.join(line + terminator for line in lines) + suffix
    """

    prefix: bytes
    separator: bytes
    terminator: bytes
    suffix: bytes

    def size(self, lines: int, line_bytes: int) -> int:
        """Return the assembled size of ``lines`` lines whose lengths sum to ``line_bytes``."""
        if lines == 0:
            return len(self.prefix) + len(self.suffix)
        return (
            len(self.prefix)
            + line_bytes
            + lines * len(self.terminator)
            + (lines - 1) * len(self.separator)
            + len(self.suffix)
        )

    def assemble(self, lines: Iterable[bytes]) -> bytes:
        """Return the assembled bytes of ``lines`` (for small inputs; large ones should stream)."""
        return self.prefix + self.separator.join(line + self.terminator for line in lines) + self.suffix


#: Anthropic's cap applies to the JSON body of ``POST /v1/messages/batches``.
ANTHROPIC_FRAMING = Framing(prefix=b'{"requests":[', separator=b",", terminator=b"", suffix=b"]}")
#: OpenAI's cap applies to the uploaded JSONL file.
OPENAI_FRAMING = Framing(prefix=b"", separator=b"", terminator=b"\n", suffix=b"")


def provider_caps(
    provider: str,
    *,
    max_requests: int | None = None,
    max_bytes: int | None = None,
    max_embedding_inputs: int | None = None,
) -> ProviderCaps:
    """Return a provider's caps with optional per-call overrides (operators expose these)."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
    caps = ANTHROPIC_CAPS if provider == "anthropic" else OPENAI_CAPS
    return caps.with_overrides(
        max_requests=max_requests, max_bytes=max_bytes, max_embedding_inputs=max_embedding_inputs
    )


@dataclasses.dataclass(frozen=True)
class ChunkStats:
    """What one chunk holds; ``bytes`` is its assembled size (body or file)."""

    index: int
    requests: int
    bytes: int
    embedding_inputs: int
    first_custom_id: str
    last_custom_id: str


class Chunker:
    """Decides, one line at a time, where each batch ends.

    Request and embedding-input counts are capped exactly; the byte cap is scaled by
    ``safety_margin`` because the bytes the SDK finally sends may differ slightly from ours
    (float spelling, multipart overhead).
    """

    def __init__(self, caps: ProviderCaps, framing: Framing, safety_margin: float = DEFAULT_SAFETY_MARGIN):
        """Chunk to ``caps`` with lines assembled as ``framing``; ``safety_margin`` is in (0, 1]."""
        if not 0 < safety_margin <= 1:
            raise ValueError(f"safety_margin must be in (0, 1], got {safety_margin}")
        self.caps = caps
        self.framing = framing
        self.byte_budget = math.floor(caps.max_bytes * safety_margin)
        self._fixed_bytes = len(framing.prefix) + len(framing.suffix)
        self._terminator_bytes = len(framing.terminator)
        self._separator_bytes = len(framing.separator)
        self._closed: list[ChunkStats] = []
        self._lines_seen = 0
        self._requests = 0
        self._line_bytes = 0
        self._embedding_inputs = 0
        self._first_id = ""
        self._last_id = ""

    @classmethod
    def for_provider(
        cls,
        provider: str,
        *,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        max_embedding_inputs: int | None = None,
        safety_margin: float = DEFAULT_SAFETY_MARGIN,
    ) -> Chunker:
        """Build a chunker with the provider's caps, framing and optional cap overrides."""
        caps = provider_caps(
            provider,
            max_requests=max_requests,
            max_bytes=max_bytes,
            max_embedding_inputs=max_embedding_inputs,
        )
        framing = ANTHROPIC_FRAMING if provider == "anthropic" else OPENAI_FRAMING
        return cls(caps, framing, safety_margin)

    def add(self, custom_id: str, line: bytes, embedding_inputs: int = 0) -> bool:
        """Account for the next line; return ``True`` if it opens a new chunk (always for the first).

        Raises :class:`RequestValidationError` if the line cannot fit even in a chunk of its own.
        """
        line_bytes = len(line)
        self._check_fits_alone(self._lines_seen, custom_id, line_bytes, embedding_inputs)
        self._lines_seen += 1
        starts_new = self._requests == 0 or not self._fits(line_bytes, embedding_inputs)
        if starts_new:
            if self._requests:
                self._closed.append(self._current())
            self._requests = 0
            self._line_bytes = 0
            self._embedding_inputs = 0
            self._first_id = custom_id
        self._requests += 1
        self._line_bytes += line_bytes
        self._embedding_inputs += embedding_inputs
        self._last_id = custom_id
        return starts_new

    def chunks(self) -> tuple[ChunkStats, ...]:
        """Return the stats of every chunk so far, the open one last."""
        if self._requests == 0:
            return tuple(self._closed)
        return (*self._closed, self._current())

    def _fits(self, line_bytes: int, embedding_inputs: int) -> bool:
        caps = self.caps
        requests = self._requests
        if requests + 1 > caps.max_requests:
            return False
        # framing.size(requests + 1, ...), spelled out: this runs once per request.
        size = self._fixed_bytes + self._line_bytes + line_bytes + (requests + 1) * self._terminator_bytes
        if size + requests * self._separator_bytes > self.byte_budget:
            return False
        return caps.max_embedding_inputs is None or (
            self._embedding_inputs + embedding_inputs <= caps.max_embedding_inputs
        )

    def _check_fits_alone(self, index: int, custom_id: str, line_bytes: int, embedding_inputs: int) -> None:
        alone = self._fixed_bytes + line_bytes + self._terminator_bytes
        if alone > self.byte_budget:
            raise RequestValidationError(
                index,
                custom_id,
                f"serialized request is {line_bytes} bytes ({alone} with the batch framing), over the "
                f"{self.byte_budget}-byte budget ({self.caps.max_bytes} bytes cap with safety margin)",
            )
        cap = self.caps.max_embedding_inputs
        if cap is not None and embedding_inputs > cap:
            raise RequestValidationError(
                index, custom_id, f"request has {embedding_inputs} embedding inputs, over the cap of {cap}"
            )

    def _current(self) -> ChunkStats:
        return ChunkStats(
            index=len(self._closed),
            requests=self._requests,
            bytes=self.framing.size(self._requests, self._line_bytes),
            embedding_inputs=self._embedding_inputs,
            first_custom_id=self._first_id,
            last_custom_id=self._last_id,
        )


def estimate_tokens(text_or_obj: Any) -> int:
    """Estimate tokens cheaply for routing: about 4 characters per token, rounded up.

    Strings are measured as is; anything else by its compact JSON encoding.
    """
    text = text_or_obj if isinstance(text_or_obj, (str, bytes)) else dumps_line(text_or_obj)
    return -(-len(text) // _CHARS_PER_TOKEN)
