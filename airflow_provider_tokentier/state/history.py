"""Batch turnaround history, per provider and model, for the router.

One small JSON object per provider/model at ``{root}/_history/{provider}/{model}.json`` holding
the last :data:`DEFAULT_KEEP` observed turnarounds, so the router reads one object instead of
scanning every run's ledger::

    {"provider": "anthropic", "model": "claude-haiku-5-5", "updated_at": "...",
     "samples": [{"seconds": 3120.5, "at": "2026-11-15T02:12:00+00:00", "key": "<results_uri>"}]}

Object stores have no append, so a record is read-modify-write of that object: two runs
finishing at the same instant may drop one sample (last writer wins). That is acceptable for
statistics; a retried task recording the same manifest twice is not, hence the ``key``.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.core.requests import PROVIDERS
from airflow_provider_tokentier.core.routing import MIN_HISTORY_SAMPLES, TurnaroundHistory
from airflow_provider_tokentier.state.ledger import resolve_state_root, write_json

#: Turnarounds kept per provider/model (the oldest are dropped first).
DEFAULT_KEEP = 200
#: A turnaround longer than this is a bad manifest (e.g. a missing ``submitted_at`` read as 1970),
#: not a slow batch: every round has a 24 h window and re-batching runs a few rounds at most.
MAX_PLAUSIBLE_TURNAROUND_S = 30 * 86400.0

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def _parse_time(value: Any, field: str) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"results manifest {field!r} is not an ISO 8601 time: {value!r}") from None
    else:
        raise ValueError(f"results manifest has no {field!r} (ISO 8601 time), got {value!r}")
    if parsed.tzinfo is None:
        raise ValueError(f"results manifest {field!r} must carry a timezone: {value!r}")
    return parsed


class TurnaroundStore:
    """Reads and records batch turnarounds under ``{root}/_history/``."""

    def __init__(
        self,
        root: ObjectStoragePath,
        *,
        keep: int = DEFAULT_KEEP,
        min_samples: int = MIN_HISTORY_SAMPLES,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.root = root
        self.keep = keep
        self.min_samples = min_samples

    @classmethod
    def from_state_root(cls, state_root: str | None = None, **kwargs: Any) -> TurnaroundStore:
        """The store under ``state_root``, else ``[tokentier] state_root``, else ``$AIRFLOW_HOME/tokentier``.

        (The same resolution as the ledger's, so history sits next to the runs it describes.)
        """
        return cls(resolve_state_root(state_root), **kwargs)

    def path(self, provider: str, model: str) -> ObjectStoragePath:
        """Where one provider/model's history lives."""
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
        if not model:
            raise ValueError("model must be a non-empty string")
        return self.root / "_history" / provider / f"{_UNSAFE.sub('_', model)}.json"

    def _read(self, provider: str, model: str) -> list[dict[str, Any]]:
        path = self.path(provider, model)
        if not path.exists():
            return []
        data = json.loads(path.read_text())
        samples = data.get("samples", []) if isinstance(data, Mapping) else []
        return [
            dict(s) for s in samples if isinstance(s, Mapping) and isinstance(s.get("seconds"), (int, float))
        ]

    def samples(self, provider: str, model: str) -> list[dict[str, Any]]:
        """The stored records (``seconds``, ``at``, ``key``), oldest first."""
        return self._read(provider, model)

    def load(self, provider: str, model: str) -> TurnaroundHistory:
        """The history the router uses (empty, hence defaults, when nothing is recorded)."""
        return TurnaroundHistory(
            provider=provider,
            model=model,
            samples=tuple(float(s["seconds"]) for s in self._read(provider, model)),
            min_samples=self.min_samples,
        )

    def record(
        self,
        provider: str,
        model: str,
        seconds: float,
        at: datetime.datetime | None = None,
        *,
        key: str | None = None,
    ) -> TurnaroundHistory:
        """Add one turnaround (``at``: when the batch ended, default now) and return the new history.

        A ``key`` already recorded (e.g. the same results manifest after a task retry) is not
        added twice.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ValueError(f"turnaround must be a finite number of seconds, got {seconds!r}")
        if seconds < 0:
            raise ValueError(f"turnaround cannot be negative, got {seconds!r}")
        if seconds > MAX_PLAUSIBLE_TURNAROUND_S:
            raise ValueError(f"turnaround of {seconds:.0f} s is implausible (over 30 days): bad timestamps?")
        at = at or datetime.datetime.now(datetime.timezone.utc)
        samples = self._read(provider, model)
        if key is None or all(s.get("key") != key for s in samples):
            samples.append({"seconds": float(seconds), "at": at.isoformat(), "key": key})
            samples = samples[-self.keep :]
            path = self.path(provider, model)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(
                path,
                {
                    "provider": provider,
                    "model": model,
                    "updated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    "samples": samples,
                },
            )
        return TurnaroundHistory(
            provider=provider,
            model=model,
            samples=tuple(float(s["seconds"]) for s in samples),
            min_samples=self.min_samples,
        )

    def record_manifest(self, manifest: Mapping[str, Any], *, model: str | None = None) -> float | None:
        """Record the turnaround of a results manifest; see :func:`record_from_manifest`."""
        return record_from_manifest(self, manifest, model=model)


def record_from_manifest(
    store: TurnaroundStore, manifest: Mapping[str, Any], *, model: str | None = None
) -> float | None:
    """Record ``finished_at - submitted_at`` of a results manifest and return it in seconds.

    Manifest fields relied on: ``provider``; ``model`` (or the ``model`` argument -- the batch
    sensor's manifest does not carry one); ``submitted_at`` and ``finished_at`` (ISO 8601 with a
    timezone); ``tiers`` (optional: with ``tiers.batch == 0`` nothing ran on batch and ``None`` is
    returned, nothing recorded); ``results_uri`` (optional: the de-duplication key, with
    ``finished_at``). A run rescued onto flex/standard is still recorded: its turnaround is what
    the consumer waited, a lower bound of the batch's. ``ValueError`` for missing or
    inconsistent fields.
    """
    tiers = manifest.get("tiers")
    if isinstance(tiers, Mapping) and not tiers.get("batch"):
        return None
    provider = manifest.get("provider")
    if provider not in PROVIDERS:
        raise ValueError(f"results manifest has no known 'provider' (got {provider!r})")
    model = model or manifest.get("model")
    if not model:
        raise ValueError("results manifest has no 'model'; pass model=")
    submitted = _parse_time(manifest.get("submitted_at"), "submitted_at")
    finished = _parse_time(manifest.get("finished_at"), "finished_at")
    seconds = (finished - submitted).total_seconds()
    if seconds < 0:
        raise ValueError(
            f"results manifest finished_at {finished.isoformat()} "
            f"is before submitted_at {submitted.isoformat()}"
        )
    uri = manifest.get("results_uri")
    key = f"{uri}@{finished.isoformat()}" if uri else None
    store.record(str(provider), str(model), seconds, at=finished, key=key)
    return seconds
