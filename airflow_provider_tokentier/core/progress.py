"""The progress record: what a tokentier task is doing now, small enough for the metadata DB.

Written by the worker at every step (submit, each resume, re-batch, rescue, landing; flex and
standard runs every ``progress_every`` rows) and read by the Airflow UI plugin, which never
reads ``state_root``. The shape is a contract with the plugin (``schema_version`` 1): readers
tolerate absent keys and unknown extra keys. Lists are capped so a record stays well under
16 KB whatever the workload size. Pure: no Airflow, no SDK.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from airflow_provider_tokentier.core.pricing import savings_usd
from airflow_provider_tokentier.core.result_rows import RESULT_STATUSES

SCHEMA_VERSION = 1
#: The task_state_store key (Airflow >= 3.3) or XCom key (3.1/3.2) holding the record.
PROGRESS_KEY = "tokentier_progress"

#: The most recent batches kept in a record (``batches_total`` tells how many there were).
MAX_BATCHES = 30
#: Error types kept, most frequent first, and examples kept per type.
MAX_ERROR_TYPES = 10
MAX_ERROR_EXAMPLES = 3
#: Error types counted before further new types are lumped under ``other``.
MAX_TRACKED_ERROR_TYPES = 100
#: Characters of an error message kept in an example.
MAX_MESSAGE_CHARS = 120

PHASES = ("submitting", "waiting", "rebatching", "rescuing", "landing", "landed", "failed", "running")
#: Statuses a re-batch or a rescue carries to the next round, in the order they are taken.
CARRIED_STATUSES = ("missing", "expired", "canceled", "errored")


class ErrorSamples:
    """Errored rows grouped by error type: a count per type and the first few examples."""

    def __init__(self) -> None:
        """Start empty."""
        self._types: dict[str, dict[str, Any]] = {}

    def add(self, error_type: str, custom_id: str, message: str | None, count: int = 1) -> None:
        """Count ``count`` rows of ``error_type``; keep the example while there is room."""
        key = error_type or "unknown"
        if key not in self._types and len(self._types) >= MAX_TRACKED_ERROR_TYPES:
            key = "other"
        entry = self._types.setdefault(key, {"type": key, "count": 0, "examples": []})
        entry["count"] += count
        if custom_id and len(entry["examples"]) < MAX_ERROR_EXAMPLES:
            entry["examples"].append({"custom_id": custom_id, "message": (message or "")[:MAX_MESSAGE_CHARS]})

    def add_row(self, custom_id: str, status: str, error: Mapping[str, Any] | None) -> None:
        """Count a result row if it errored (other statuses are not errors to explain)."""
        if status == "errored":
            error = error or {}
            self.add(str(error.get("type") or "unknown"), custom_id, error.get("message"))

    def merge(self, snapshot: Iterable[Mapping[str, Any]]) -> None:
        """Add the groups of another collector's `snapshot`."""
        for group in snapshot:
            examples = list(group.get("examples") or [])
            first = examples[0] if examples else {"custom_id": "", "message": None}
            self.add(str(group["type"]), str(first["custom_id"]), first.get("message"), int(group["count"]))
            entry = self._types.get(str(group["type"]))
            if entry is not None:
                for example in examples[1:]:
                    if len(entry["examples"]) < MAX_ERROR_EXAMPLES:
                        entry["examples"].append(dict(example))

    def snapshot(self, limit: int = MAX_ERROR_TYPES) -> list[dict[str, Any]]:
        """The ``limit`` most frequent types, JSON-ready."""
        ranked = sorted(self._types.values(), key=lambda g: (-g["count"], g["type"]))
        return [
            {"type": g["type"], "count": g["count"], "examples": [dict(e) for e in g["examples"]]}
            for g in ranked[:limit]
        ]


def combine_rounds(
    total: int, round_counts: Sequence[Mapping[str, int] | None], carried: Sequence[int]
) -> dict[str, int]:
    """Per-request totals across rounds: each request counted once, at its latest round.

    ``round_counts[r]`` is round r's harvested counts per status (None while it runs);
    ``carried[r]`` how many of its requests round r + 1 took over. Those came from the
    statuses in :data:`CARRIED_STATUSES` (what re-batching and rescue pick), so they are taken
    off in that order. Whatever is not accounted for is ``pending``.
    """
    totals = dict.fromkeys(RESULT_STATUSES, 0)
    for round_, counts in enumerate(round_counts):
        if counts is None:
            continue
        kept = {status: int(counts.get(status, 0)) for status in RESULT_STATUSES}
        left = carried[round_] if round_ < len(carried) else 0
        for status in CARRIED_STATUSES:
            taken = min(left, kept[status])
            kept[status] -= taken
            left -= taken
        for status, count in kept.items():
            totals[status] += count
    known = sum(totals.values())
    return {"total": total, **totals, "skipped_budget": 0, "pending": max(0, total - known)}


def expected_finish(started_at: float | None, p50_s: float, p95_s: float) -> dict[str, str] | None:
    """When a round started at ``started_at`` (unix time) should end, at p50 and p95 turnaround."""
    if started_at is None:
        return None
    return {"p50": _iso(started_at + p50_s), "p95": _iso(started_at + p95_s)}


def iso_utc(at: float | None) -> str | None:
    """ISO 8601 UTC string of a unix time (None stays None)."""
    return None if at is None else _iso(at)


def _iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class BatchProgress:
    """One batch (or rescue run) of a workload as the UI shows it."""

    id: str
    round: int
    status: str
    requests: int
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    url: str | None = None


@dataclasses.dataclass
class ProgressRecord:
    """The record itself; see the module docstring. Build it, then `to_dict` / `to_json`."""

    operator: str
    provider: str
    tier: str
    phase: str
    model: str | None = None
    decision: Mapping[str, Any] | None = None
    round: int | None = None
    max_rounds: int | None = None
    batches: list[BatchProgress] = dataclasses.field(default_factory=list)
    totals: dict[str, int] | None = None
    cost_usd: float | None = None
    standard_cost_usd: float | None = None
    deadline: str | None = None
    expected_finish: dict[str, str] | None = None
    rescue: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    results_uri: str | None = None
    started_at: str | None = None
    updated_at: str | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with capped lists, ``schema_version`` and ``savings_usd``."""
        record = {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}
        record["batches"] = record["batches"][-MAX_BATCHES:]
        record["batches_total"] = len(self.batches)
        record["errors"] = record["errors"][:MAX_ERROR_TYPES]
        record["decision"] = _small_decision(self.decision)
        record["savings_usd"] = savings_usd(self.standard_cost_usd, self.cost_usd)
        if record["updated_at"] is None:
            record["updated_at"] = iso_utc(datetime.datetime.now(datetime.timezone.utc).timestamp())
        return record

    def to_json(self) -> bytes:
        """The record as compact JSON bytes."""
        return msgspec.json.encode(self.to_dict())


def _small_decision(decision: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The router decision as the record carries it: the tier, its reasons and the cost per tier."""
    if decision is None:
        return None
    return {
        "tier": decision.get("tier"),
        "reasons": [str(r)[:MAX_MESSAGE_CHARS] for r in list(decision.get("reasons") or [])[:10]],
        "costs": dict(decision.get("estimated_cost_usd") or decision.get("costs") or {}),
    }


#: Results-manifest keys an asset event's ``extra`` carries.
RESULTS_EVENT_KEYS = (
    "results_uri",
    "total",
    "counts",
    "rounds",
    "tiers",
    "cost_usd",
    "standard_cost_usd",
    "savings_usd",
    "provider",
    "model",
    "finished_at",
)


def results_event_extra(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The ``extra`` of a landed-results asset event: what landed, where, and what it cost."""
    extra = {key: manifest.get(key) for key in RESULTS_EVENT_KEYS}
    decision = manifest.get("decision")
    if isinstance(decision, Mapping) and decision.get("tier"):
        extra["tier_chosen"] = decision["tier"]
    return extra
