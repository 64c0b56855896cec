"""The result-row contract: one row per input ``custom_id``, merged across rounds and tiers."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, TypedDict

import msgspec

from airflow_provider_tokentier.core.jsonl import dumps_line, loads_line
from airflow_provider_tokentier.core.pricing import (
    TIER_MULTIPLIERS,
    ModelPrice,
    PriceTable,
    Usage,
    UsageDict,
    cost_at,
    default_price_table,
    format_usd,
    per_million_usd,
    savings_usd,
    tier_multiplier,
)
from airflow_provider_tokentier.core.records import ResultsManifest
from airflow_provider_tokentier.core.requests import PROVIDERS

__all__ = [
    "PROVIDERS",
    "RESULT_STATUSES",
    "TIERS",
    "BatchRows",
    "ErrorInfo",
    "LandedRow",
    "OutcomeCounts",
    "ResultRow",
    "ResultTally",
    "dumps_line",
    "is_retryable_error",
    "loads_line",
    "make_error",
    "make_result_row",
    "now_iso",
]

#: ``skipped_budget``: never sent, because it would have crossed the task's ``max_cost_usd``.
RESULT_STATUSES = ("succeeded", "errored", "expired", "canceled", "missing", "skipped_budget")
TIERS = ("batch", "flex", "standard")

# Only succeeded requests are billed: Anthropic bills no errored/canceled/expired request, and the
# work OpenAI finishes before an expiry or cancel arrives as succeeded output lines.
_BILLED_STATUSES = frozenset({"succeeded"})

_ANTHROPIC_NOT_RETRYABLE = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
    }
)
_OPENAI_RETRYABLE = frozenset(
    {
        "request_timeout",
        "batch_expired",
        "batch_cancelled",
        "server_error",
        "rate_limit_exceeded",
        # The batch was refused for queue capacity; the requests themselves are fine.
        "token_limit_exceeded",
    }
)


class ErrorInfo(TypedDict):
    """The ``error`` object of a result row."""

    type: str
    message: str
    retryable: bool


class ResultRow(TypedDict):
    """One line of the results JSONL (the row contract the README documents)."""

    custom_id: str
    status: str
    tier: str
    provider: str
    model: str
    batch_id: str | None
    round: int
    response: dict[str, Any] | None
    error: ErrorInfo | None
    usage: UsageDict
    cost_usd: float | None
    standard_cost_usd: float | None


def is_retryable_error(provider: str, error_type_or_code: str | int) -> bool:
    """Return whether resubmitting the same request unchanged may succeed.

    Anthropic: the docs say only ``invalid_request_error`` needs a fixed request; auth, permission,
    not-found and too-large errors will not change on retry either. Every other type (``api_error``,
    ``overloaded_error``, ``rate_limit_error``, ``timeout_error``, new ones) is retryable.
    OpenAI: HTTP 0/408/429/5xx and the transient codes (``request_timeout``, ``batch_expired``,
    ``batch_cancelled``, ``server_error``, ``rate_limit_exceeded``, ``token_limit_exceeded``) are
    retryable; anything else, such as ``invalid_request_error``, describes the request and is not.
    HTTP status codes may be given as ints or digit strings for either provider.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
    if isinstance(error_type_or_code, int) or error_type_or_code.isdigit():
        status = int(error_type_or_code)
        # 0 is what OpenAI batch output reports when no HTTP response was produced at all.
        return status in (0, 408, 429) or status >= 500
    if provider == "anthropic":
        return error_type_or_code not in _ANTHROPIC_NOT_RETRYABLE
    return error_type_or_code in _OPENAI_RETRYABLE


def make_error(provider: str, error_type: str | int, message: str) -> ErrorInfo:
    """Build a row ``error`` whose ``retryable`` flag follows :func:`is_retryable_error`."""
    return {
        "type": str(error_type),
        "message": message,
        "retryable": is_retryable_error(provider, error_type),
    }


def make_result_row(
    *,
    custom_id: str,
    status: str,
    tier: str,
    provider: str,
    model: str,
    batch_id: str | None = None,
    round: int = 0,
    response: Mapping[str, Any] | None = None,
    error: ErrorInfo | None = None,
    usage: Usage | None = None,
    prices: PriceTable | None = None,
    on: datetime.date | None = None,
) -> ResultRow:
    """Build a result row, pricing it at ``tier`` and at the standard tier.

    Only succeeded rows carry usage; the others are not billed, so passing usage for them is an
    error and they cost 0.0. Costs are ``None`` when the model has no known price (the table warns
    once). ``prices`` defaults to :func:`default_price_table`; ``on`` is the pricing date
    (default: today, UTC).
    """
    if status not in RESULT_STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {RESULT_STATUSES}")
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {TIERS}")
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
    if status not in _BILLED_STATUSES and usage is not None and usage != Usage():
        raise ValueError(f"{custom_id}: a {status!r} row is not billed and cannot carry usage")
    billed_usage = usage or Usage()
    table = prices or default_price_table()
    cost = table.cost_usd(provider, model, tier, billed_usage, on)
    standard_cost = (
        cost if tier == "standard" else table.cost_usd(provider, model, "standard", billed_usage, on)
    )
    return {
        "custom_id": custom_id,
        "status": status,
        "tier": tier,
        "provider": provider,
        "model": model,
        "batch_id": batch_id,
        "round": round,
        "response": None if response is None else dict(response),
        "error": error,
        "usage": billed_usage.to_dict(),
        "cost_usd": cost,
        "standard_cost_usd": standard_cost,
    }


class LandedRow(msgspec.Struct, gc=False):
    """A `ResultRow` as harvest writes it: same keys, same order, the response as raw JSON.

    ``response`` holds the provider's bytes, so a row is encoded without decoding the response.
    """

    custom_id: str
    status: str
    tier: str
    provider: str
    model: str
    batch_id: str | None
    round: int
    response: msgspec.Raw | None
    error: Mapping[str, Any] | None
    usage: UsageDict
    cost_usd: float | None
    standard_cost_usd: float | None


_NO_USAGE = Usage()
_STANDARD_MULTIPLIER = TIER_MULTIPLIERS["standard"]


class BatchRows:
    """Builds the rows of one batch like `make_result_row`, resolving each model's price once.

    Every row of a batch shares its tier, provider, batch, round and pricing day, so they are
    checked once here; a row's cost and standard cost come from one `per_million_usd` sum.
    """

    def __init__(
        self,
        *,
        tier: str,
        provider: str,
        batch_id: str | None,
        round: int,
        prices: PriceTable | None = None,
        on: datetime.date | None = None,
    ) -> None:
        """Fix what every row of the batch shares; ``prices`` and ``on`` as in `make_result_row`."""
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}; expected one of {TIERS}")
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
        self._tier = tier
        self._provider = provider
        self._batch_id = batch_id
        self._round = round
        self._table = prices or default_price_table()
        self._on = on
        self._multiplier = tier_multiplier(tier)
        self._prices: dict[str, ModelPrice | None] = {}

    def row(
        self,
        custom_id: str,
        status: str,
        model: str,
        *,
        response: msgspec.Raw | None = None,
        error: Mapping[str, Any] | None = None,
        usage: Usage | None = None,
    ) -> LandedRow:
        """The row of one request; only a succeeded row may carry usage (as in `make_result_row`)."""
        if status not in RESULT_STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {RESULT_STATUSES}")
        if status not in _BILLED_STATUSES and usage is not None and usage != _NO_USAGE:
            raise ValueError(f"{custom_id}: a {status!r} row is not billed and cannot carry usage")
        billed_usage = usage or _NO_USAGE
        if model in self._prices:
            price = self._prices[model]
        else:
            price = self._prices[model] = self._table.price_or_warn(self._provider, model, self._on)
        cost: float | None = None
        standard_cost: float | None = None
        if price is not None:
            per_million = per_million_usd(price, billed_usage)
            cost = cost_at(per_million, self._multiplier)
            standard_cost = cost if self._tier == "standard" else cost_at(per_million, _STANDARD_MULTIPLIER)
        return LandedRow(
            custom_id,
            status,
            self._tier,
            self._provider,
            model,
            self._batch_id,
            self._round,
            response,
            error,
            billed_usage.to_dict(),
            cost,
            standard_cost,
        )


class OutcomeCounts:
    """Counts of result rows per status; every status is always reported, zeros included."""

    def __init__(self) -> None:
        """Start with every status at zero."""
        self._counts = dict.fromkeys(RESULT_STATUSES, 0)

    def add(self, status: str, count: int = 1) -> None:
        """Count ``count`` more rows with ``status``."""
        if status not in self._counts:
            raise ValueError(f"unknown status {status!r}; expected one of {RESULT_STATUSES}")
        self._counts[status] += count

    @property
    def total(self) -> int:
        """Return the number of rows counted."""
        return sum(self._counts.values())

    def to_dict(self) -> dict[str, int]:
        """Return ``{status: count}`` with every status, in :data:`RESULT_STATUSES` order."""
        return dict(self._counts)


# -- landing tally ----------------------------------------------------------------------------------------


class ResultTally:
    """Running totals of landed rows, enough to build a results manifest in O(1) memory.

    Costs are summed exactly in nano-dollars (every row cost is rounded to 9 decimals), so the
    total does not depend on row order and matches :func:`~airflow_provider_tokentier.core.pricing.sum_usd`.
    """

    def __init__(self) -> None:
        """Start empty."""
        self.counts = OutcomeCounts()
        self.tiers = {"batch": 0, "flex": 0, "standard": 0}
        self._nanos = {"cost": 0, "standard": 0}
        self._unknown = {"cost": False, "standard": False}

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one result row."""
        self.add_values(row["status"], row["tier"], row.get("cost_usd"), row.get("standard_cost_usd"))

    def add_values(
        self, status: str, tier: str, cost_usd: float | None, standard_cost_usd: float | None
    ) -> None:
        """Count one result row given by its status, tier and costs."""
        self.counts.add(status)
        self.tiers[tier] = self.tiers.get(tier, 0) + 1
        # Runs for every landed row: the two costs are spelled out rather than looped over.
        if cost_usd is None:
            self._unknown["cost"] = True
        else:
            self._nanos["cost"] += round(float(cost_usd) * 1_000_000_000)
        if standard_cost_usd is None:
            self._unknown["standard"] = True
        else:
            self._nanos["standard"] += round(float(standard_cost_usd) * 1_000_000_000)

    def snapshot(self) -> dict[str, Any]:
        """The totals as JSON-ready data (exact: costs in nano-dollars), for `merge`."""
        return {
            "counts": self.counts.to_dict(),
            "tiers": dict(self.tiers),
            "nanos": dict(self._nanos),
            "unknown": dict(self._unknown),
        }

    def merge(self, snapshot: Mapping[str, Any]) -> None:
        """Add the totals of another tally's `snapshot`."""
        for status, count in snapshot["counts"].items():
            self.counts.add(status, count)
        for tier, count in snapshot["tiers"].items():
            self.tiers[tier] = self.tiers.get(tier, 0) + count
        for key in ("cost", "standard"):
            self._nanos[key] += snapshot["nanos"][key]
            self._unknown[key] = self._unknown[key] or snapshot["unknown"][key]

    @property
    def total(self) -> int:
        """Rows counted so far."""
        return self.counts.total

    def cost_usd(self) -> float | None:
        """Total cost at the tiers used (``None`` if any row has no known price)."""
        return None if self._unknown["cost"] else round(self._nanos["cost"] / 1_000_000_000, 9)

    def standard_cost_usd(self) -> float | None:
        """Total cost had every row run on standard (``None`` if any row has no known price)."""
        return None if self._unknown["standard"] else round(self._nanos["standard"] / 1_000_000_000, 9)

    def manifest(
        self,
        *,
        results_uri: str,
        provider: str,
        submitted_at: str | None,
        finished_at: str | None = None,
        deadline: str | None = None,
        model: str | None = None,
        rounds: int = 1,
        batches: list[str] | None = None,
        decision: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The results manifest, with the same keys as the batch sensor's (``BatchGate.land``)."""
        cost = self.cost_usd()
        standard = self.standard_cost_usd()
        return ResultsManifest(
            results_uri=results_uri,
            total=self.counts.total,
            counts=self.counts.to_dict(),
            rounds=rounds,
            batches=tuple(list(batches or [])[:500]),
            tiers=dict(self.tiers),
            cost_usd=cost,
            standard_cost_usd=standard,
            savings_usd=savings_usd(standard, cost),
            decision=None if decision is None else dict(decision),
            provider=provider,
            model=model,
            submitted_at=submitted_at,
            finished_at=finished_at or now_iso(),
            deadline=deadline,
        ).to_dict()

    def summary(self) -> str:
        """One log line: counts per status and tier, cost, standard cost and savings."""
        counts = {k: v for k, v in self.counts.to_dict().items() if v}
        tiers = {k: v for k, v in self.tiers.items() if v}
        cost, standard = self.cost_usd(), self.standard_cost_usd()
        saved = savings_usd(standard, cost)
        return (
            f"{self.total} rows {counts or {}} by tier {tiers or {}}; cost {_exact_usd(cost)}, "
            f"at standard {_exact_usd(standard)}, saved {_exact_usd(saved)}"
        )


def now_iso() -> str:
    """The current UTC time as ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _exact_usd(value: float | None) -> str:
    return format_usd(value, unknown="unknown (unpriced model)", places=6)
