"""The records tokentier writes and reads back: manifests, ledger facts and their schema version.

Every record written from now on carries ``schema_version`` (:data:`SCHEMA_VERSION`). A record
without one was written before versions existed (version 0); its keys are the same, so readers
take it as it is. A record from a newer version than this code knows is refused with
`SchemaVersionError` rather than misread.

The XCom manifests stay plain JSON objects with the keys the README documents (plus
``schema_version``); the types here build and check them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from airflow_provider_tokentier.core.errors import SchemaVersionError

__all__ = [
    "SCHEMA_VERSION",
    "ChunkFile",
    "IntentRecord",
    "ResultsManifest",
    "SubmissionManifest",
    "SubmittedBatch",
    "check_schema_version",
]

#: The version of every record this code writes. Version 0: the unversioned records before it.
SCHEMA_VERSION = 1


def check_schema_version(data: Mapping[str, Any], what: str) -> int:
    """The ``schema_version`` of ``data`` (0 when absent); `SchemaVersionError` if it is newer."""
    version = data.get("schema_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise SchemaVersionError(f"{what}: schema_version must be a non-negative integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{what} has schema_version {version}, newer than the {SCHEMA_VERSION} this tokentier "
            "reads; upgrade airflow-provider-tokentier on every worker and triggerer"
        )
    return version


@dataclasses.dataclass(frozen=True)
class ChunkFile:
    """One prepared batch: its request file and what it holds."""

    round: int
    index: int
    uri: str
    requests: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in the ``workload`` ledger record."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SubmittedBatch:
    """A batch the provider accepted, as the ledger (``submitted-*``) and the manifests record it."""

    id: str
    round: int
    chunk: int
    requests: int
    bytes: int
    uri: str | None
    #: The task scope of the custom_ids sent (see :mod:`core.wire_ids`); None: sent as given.
    id_scope: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ledger record and submission-manifest entry."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubmittedBatch:
        """Read a ledger record or manifest entry of any known version (``id_scope`` may be absent)."""
        check_schema_version(data, "submitted batch record")
        return cls(
            data["id"],
            data["round"],
            data["chunk"],
            data["requests"],
            data["bytes"],
            data["uri"],
            data.get("id_scope"),
        )


@dataclasses.dataclass(frozen=True)
class IntentRecord:
    """The ``intent-*`` ledger fact, written before a paid submit call: when, and how to find it."""

    at: float
    tag: dict[str, str]
    requests: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the ledger record."""
        return {"at": self.at, "tag": dict(self.tag), "requests": self.requests}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntentRecord:
        """Read an intent record of any known version."""
        check_schema_version(data, "intent record")
        return cls(float(data["at"]), dict(data["tag"]), int(data["requests"]))


@dataclasses.dataclass(frozen=True)
class SubmissionManifest:
    """What `BatchSubmitOperator` returns (XCom) and `BatchSensor` waits on."""

    provider: str
    conn_id: str | None
    state_uri: str
    requests_uri: str
    endpoint: str | None
    model: str | None
    fingerprint: str
    total: int
    caps: dict[str, int | None]
    safety_margin: float
    batches: tuple[SubmittedBatch, ...]
    submitted_at: str
    #: The spend cap the workload was submitted under, and its batch-tier estimate (README: Spend cap).
    max_cost_usd: float | None = None
    estimated_cost_usd: float | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object pushed to XCom (the README's keys plus ``schema_version``)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["caps"] = dict(self.caps)
        data["batches"] = [b.to_dict() for b in self.batches]
        data["schema_version"] = SCHEMA_VERSION
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubmissionManifest:
        """Read a manifest of any known version (version 0 had the same keys, unversioned)."""
        check_schema_version(data, "submission manifest")
        return cls(
            provider=data["provider"],
            conn_id=data.get("conn_id"),
            state_uri=data["state_uri"],
            requests_uri=data["requests_uri"],
            endpoint=data.get("endpoint"),
            model=data.get("model"),
            fingerprint=data["fingerprint"],
            total=int(data["total"]),
            caps=dict(data.get("caps") or {}),
            safety_margin=float(data["safety_margin"]),
            batches=tuple(
                SubmittedBatch.from_dict({**b, "chunk": b.get("chunk", i)})
                for i, b in enumerate(data["batches"])
            ),
            submitted_at=data["submitted_at"],
            max_cost_usd=data.get("max_cost_usd"),
            estimated_cost_usd=data.get("estimated_cost_usd"),
        )


@dataclasses.dataclass(frozen=True)
class ResultsManifest:
    """What `BatchSensor`, `FlexOperator`, `StandardOperator` and `TieredInferenceOperator` return."""

    results_uri: str
    total: int
    counts: dict[str, int]
    rounds: int
    batches: tuple[str, ...]
    tiers: dict[str, int]
    cost_usd: float | None
    standard_cost_usd: float | None
    savings_usd: float | None
    decision: dict[str, Any] | None
    provider: str
    model: str | None
    submitted_at: str | None
    finished_at: str | None
    deadline: str | None
    #: What ``max_cost_usd`` did: ``{max_cost_usd, spent_usd, stopped, skipped}`` (None: no cap).
    budget: dict[str, Any] | None = None
    #: Result lines dropped at harvest (``{foreign, repeated}``) and batches disowned as another task's.
    dropped_results: dict[str, int] | None = None
    disowned_batches: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object pushed to XCom (the README's keys plus ``schema_version``)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(
            disowned_batches=list(self.disowned_batches),
            counts=dict(self.counts),
            batches=list(self.batches),
            tiers=dict(self.tiers),
            decision=None if self.decision is None else dict(self.decision),
            schema_version=SCHEMA_VERSION,
        )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultsManifest:
        """Read a manifest of any known version (version 0 had the same keys, unversioned)."""
        check_schema_version(data, "results manifest")
        decision = data.get("decision")
        return cls(
            results_uri=data["results_uri"],
            total=int(data["total"]),
            counts=dict(data["counts"]),
            rounds=int(data["rounds"]),
            batches=tuple(data.get("batches") or ()),
            tiers=dict(data["tiers"]),
            cost_usd=data.get("cost_usd"),
            standard_cost_usd=data.get("standard_cost_usd"),
            savings_usd=data.get("savings_usd"),
            decision=None if decision is None else dict(decision),
            provider=data["provider"],
            model=data.get("model"),
            submitted_at=data.get("submitted_at"),
            finished_at=data.get("finished_at"),
            deadline=data.get("deadline"),
            budget=data.get("budget"),
            dropped_results=data.get("dropped_results"),
            disowned_batches=tuple(data.get("disowned_batches") or ()),
        )
