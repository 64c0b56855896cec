"""The emulator's knobs: one dataclass, settable from CLI flags and `POST /_emulator/config`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from airflow_provider_tokentier.testing.emulator.faults import check_faults

_RATES = ("expire_rate", "error_rate", "flex_429_rate", "poll_error_rate", "list_error_rate")


@dataclasses.dataclass
class EmulatorConfig:
    """Behaviour knobs of the emulator.

    Durations ending in ``_s`` are *virtual* seconds; the virtual clock runs ``time_scale``
    virtual seconds per real second.
    """

    #: Virtual seconds per real second (3600 makes an hour pass in a second).
    time_scale: float = 1.0
    #: Seed for every random outcome: the same seed and the same calls give the same outcomes.
    seed: int = 0
    #: Real milliseconds added to every API response.
    latency_ms: float = 0.0
    #: Typical virtual time for a whole batch to finish (each batch draws 0.5x-1.5x of it).
    batch_turnaround_s: float = 3600.0
    #: Share of batch requests that never finish and expire at the 24 h mark.
    expire_rate: float = 0.0
    #: Share of batch requests that end errored with a retryable server error.
    error_rate: float = 0.0
    #: Share of flex calls refused with 429 "resource unavailable" (never billed).
    flex_429_rate: float = 0.0
    #: Share of status and file-content calls answered with a transient 5xx (529 on Anthropic).
    poll_error_rate: float = 0.0
    #: Share of batch list calls answered with a transient 5xx (529 on Anthropic).
    list_error_rate: float = 0.0
    #: Extra virtual seconds an OpenAI batch stays in ``finalizing``.
    finalizing_stall_s: float = 0.0
    #: Virtual seconds a cancel stays in ``canceling`` / ``cancelling``.
    cancel_latency_s: float = 60.0
    #: Enqueued input-token limit per OpenAI model; a batch over it ends ``failed``
    #: with ``token_limit_exceeded``. None means no limit.
    enqueued_token_limit: int | None = None
    #: When set, the only API key accepted; otherwise any non-empty key is accepted.
    api_key: str | None = None
    #: Hostile provider output: fault name -> how many more times it fires (see ``faults.py``).
    faults: dict[str, int] = dataclasses.field(default_factory=dict)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply ``changes`` after checking every name and value; nothing changes on error."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        staged: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in fields:
                raise ValueError(f"unknown emulator setting {name!r}; known: {sorted(fields)}")
            staged[name] = _coerce(name, value)
        for name, value in staged.items():
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (the API key is never echoed)."""
        data = dataclasses.asdict(self)
        data["faults"] = dict(self.faults)
        data["api_key"] = "***" if self.api_key else None
        return data


def _coerce(name: str, value: Any) -> Any:
    if name == "faults":
        return check_faults(value)
    if name == "api_key":
        return None if value is None else str(value)
    if name == "enqueued_token_limit":
        return None if value is None else int(value)
    if name == "seed":
        return int(value)
    number = float(value)
    if name in _RATES and not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    if name == "time_scale" and number <= 0:
        raise ValueError(f"time_scale must be positive, got {value!r}")
    if number < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return number
