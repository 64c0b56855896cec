"""Deterministic batch timelines and synthetic model output shared by both provider emulations.

A batch's fate is fixed when it is created: each request gets an outcome (succeed, error,
expire) and a virtual finish time drawn from the seed, the batch id and its custom_id. Every
status read is then a pure function of the virtual clock, so no background task is needed and
the same seed gives the same story.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from airflow_provider_tokentier.testing.emulator.state import EmulatorState

#: Both providers give a batch 24 hours before unfinished requests expire.
BATCH_WINDOW_S = 24 * 3600.0

SUCCEED, ERROR, EXPIRE = 0, 1, 2


@dataclass
class BatchTimeline:
    """When each request of one batch settles, and how."""

    created_at: float
    fates: bytearray
    #: Virtual unix time each request finishes (``inf`` for requests that will expire).
    finish_at: array[float]
    #: Sorted finish times of requests that succeed / error, for progress counts.
    _succeed_sorted: list[float] = field(default_factory=list)
    _error_sorted: list[float] = field(default_factory=list)

    @property
    def expires_at(self) -> float:
        """When the batch's completion window closes."""
        return self.created_at + BATCH_WINDOW_S

    @property
    def will_expire(self) -> bool:
        """Whether any request is fated to expire, so the batch ends at its expiry time."""
        return EXPIRE in self.fates

    @property
    def all_done_at(self) -> float:
        """When the last request settles: the expiry time if any request is fated to expire."""
        if self.will_expire or not self.fates:
            return self.expires_at if self.fates else self.created_at
        return max(self.finish_at)

    def settled_counts(self, now: float) -> tuple[int, int]:
        """(succeeded, errored) requests finished by virtual time ``now``."""
        return (
            bisect.bisect_right(self._succeed_sorted, now),
            bisect.bisect_right(self._error_sorted, now),
        )

    def outcome_at(self, index: int, now: float) -> int | None:
        """SUCCEED or ERROR when request ``index`` had finished by ``now``, else None."""
        if self.finish_at[index] <= now:
            return self.fates[index]
        return None


def plan_batch(
    state: EmulatorState,
    batch_id: str,
    custom_ids: Iterable[str],
    created_at: float,
    *,
    start_delay_s: float = 0.0,
) -> BatchTimeline:
    """Draw every request's fate and finish time for a new batch.

    ``start_delay_s`` is time before any request can finish (OpenAI's ``validating`` phase).
    """
    config = state.config
    turnaround = config.batch_turnaround_s * (0.5 + state.unit(batch_id, "turnaround"))
    fates = bytearray()
    finish_at = array("d")
    succeed_sorted: list[float] = []
    error_sorted: list[float] = []
    start = created_at + start_delay_s
    for custom_id in custom_ids:
        draw = state.unit(batch_id, custom_id, "fate")
        if draw < config.expire_rate:
            fates.append(EXPIRE)
            finish_at.append(math.inf)
            continue
        when = start + max(1.0, turnaround * state.unit(batch_id, custom_id, "when"))
        when = min(when, created_at + BATCH_WINDOW_S - 1.0)
        fate = ERROR if draw < config.expire_rate + config.error_rate else SUCCEED
        fates.append(fate)
        finish_at.append(when)
        (error_sorted if fate == ERROR else succeed_sorted).append(when)
    succeed_sorted.sort()
    error_sorted.sort()
    return BatchTimeline(created_at, fates, finish_at, succeed_sorted, error_sorted)


# -- synthetic model output -----------------------------------------------------------------------

_WORDS = [
    "the",
    "summary",
    "notes",
    "that",
    "key",
    "points",
    "include",
    "scope",
    "owners",
    "risks",
    "timeline",
    "metrics",
    "decisions",
    "follow-ups",
    "context",
    "background",
    "changes",
    "impact",
    "review",
    "status",
    "next",
    "steps",
    "open",
    "questions",
]


def estimate_tokens(text: str) -> int:
    """Tokens for ``text`` the way the emulator counts them: about four characters a token."""
    return max(1, math.ceil(len(text) / 4))


def synth_text(prompt: str, max_tokens: int, salt: str = "") -> tuple[str, int]:
    """Deterministic reply text derived from ``prompt``, and its token count (<= max_tokens)."""
    digest = hashlib.blake2b((salt + prompt).encode(), digest_size=16).digest()
    target = max(1, min(max_tokens, 8 + estimate_tokens(prompt) // 3 + digest[0] % 24))
    words = [_WORDS[(digest[i % 16] + i) % len(_WORDS)] for i in range(target)]
    head = " ".join(prompt.split()[:6])
    text = f"[{head}] " + " ".join(words)
    return text, target


def synth_embedding(text: str, dimensions: int = 256) -> list[float]:
    """A deterministic unit-length embedding derived from a hash of ``text``."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.blake2b(f"{counter}:{text}".encode(), digest_size=64).digest()
        values.extend(v / 2**31 for v in struct.unpack(">16i", block))
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]
