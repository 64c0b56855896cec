"""The spend cap (``max_cost_usd``): estimates before paying, and a meter for calls in flight.

Estimates are deliberately on the high side: input tokens are estimated from the request body
(about 4 characters a token), output tokens are the request's own cap (``max_tokens``,
``max_completion_tokens`` or ``max_output_tokens``), else :data:`DEFAULT_OUTPUT_TOKENS`.
A request whose model has no known price cannot be estimated: with a cap set it is refused
(give ``prices=`` for it) rather than run unmetered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_tokentier.core.chunking import estimate_tokens
from airflow_provider_tokentier.core.errors import BudgetExceededError
from airflow_provider_tokentier.core.pricing import PriceTable, Usage, default_price_table

#: The result status of a request never sent because it would have crossed ``max_cost_usd``.
SKIPPED_BUDGET = "skipped_budget"
#: The ``error.type`` of such a row.
BUDGET_EXCEEDED = "budget_exceeded"
#: Output tokens assumed for a request that sets no output cap of its own.
DEFAULT_OUTPUT_TOKENS = 1024
__all__ = [
    "BUDGET_EXCEEDED",
    "DEFAULT_OUTPUT_TOKENS",
    "SKIPPED_BUDGET",
    "BudgetExceededError",
    "SpendMeter",
    "check_max_cost",
    "check_within_cap",
    "estimate_row_cost",
    "estimate_rows_cost",
]


_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def check_max_cost(value: Any) -> float | None:
    """Validate a ``max_cost_usd`` argument: None, or a finite number above zero."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"max_cost_usd must be a positive number of US dollars (e.g. 25.0), got {value!r}")
    return float(value)


def estimate_row_cost(
    row: Mapping[str, Any], provider: str, tier: str, prices: PriceTable | None = None
) -> float | None:
    """Estimated USD cost of one normalized request row on ``tier``; None when its model has no price."""
    body = row.get("params") if provider == "anthropic" else row.get("body")
    body = body if isinstance(body, Mapping) else {}
    model = body.get("model")
    if not isinstance(model, str):
        return None
    input_tokens = estimate_tokens({k: v for k, v in body.items() if k not in _OUTPUT_CAPS})
    cap = next((body[k] for k in _OUTPUT_CAPS if isinstance(body.get(k), int)), None)
    embeddings = provider == "openai" and row.get("url") == "/v1/embeddings"
    output_tokens = 0 if embeddings else int(cap) if cap is not None else DEFAULT_OUTPUT_TOKENS
    table = prices or default_price_table()
    return table.cost_usd(
        provider, model, tier, Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    )


def estimate_rows_cost(
    rows: Iterable[Mapping[str, Any]], provider: str, tier: str, prices: PriceTable | None = None
) -> tuple[float, list[str]]:
    """(estimated USD of ``rows`` on ``tier``, the models that have no price), streaming the rows."""
    total = 0.0
    unpriced: set[str] = set()
    for row in rows:
        cost = estimate_row_cost(row, provider, tier, prices)
        if cost is None:
            body = row.get("params") if provider == "anthropic" else row.get("body")
            unpriced.add(str((body or {}).get("model")))
        else:
            total += cost
    return round(total, 9), sorted(unpriced)


def check_within_cap(
    cap: float | None, spent_usd: float, estimate_usd: float, unpriced: list[str], what: str
) -> str | None:
    """Why ``what`` (estimated at ``estimate_usd``, after ``spent_usd``) may not start; None if it may."""
    if cap is None:
        return None
    if unpriced:
        return (
            f"{what} uses model(s) {unpriced} with no known price, so its cost cannot be held to "
            f"max_cost_usd={cap}; give their prices with `prices=`"
        )
    if spent_usd + estimate_usd > cap:
        return (
            f"{what} is estimated at ${estimate_usd:.4f}; with ${spent_usd:.4f} already spent that "
            f"would cross max_cost_usd=${cap:.4f}"
        )
    return None


@dataclass
class SpendMeter:
    """Spend against a cap while requests run: what finished, plus estimates of those in flight.

    A request may start only when ``spent + reserved + its estimate`` stays within the cap; the
    first refusal stops the meter for good, so the rest of the run is skipped rather than
    squeezed in by size.
    """

    cap: float | None
    spent: float = 0.0
    reserved: float = 0.0
    stopped: bool = False
    skipped: int = 0

    def try_start(self, estimate: float | None) -> bool:
        """Reserve ``estimate`` for a request about to start; False (and stop) if it does not fit."""
        if self.cap is None:
            return True
        if self.stopped or estimate is None or self.spent + self.reserved + estimate > self.cap:
            self.stopped = True
            self.skipped += 1
            return False
        self.reserved += estimate
        return True

    def finish(self, estimate: float | None, cost: float | None) -> None:
        """A started request settled: release its reservation and count what it cost."""
        if self.cap is None:
            return
        self.reserved = max(0.0, self.reserved - (estimate or 0.0))
        self.spent += cost if cost is not None else (estimate or 0.0)

    def report(self) -> dict[str, Any] | None:
        """The manifest's ``budget`` block for a flex/standard run (None without a cap)."""
        if self.cap is None:
            return None
        return {
            "max_cost_usd": self.cap,
            "spent_usd": round(self.spent, 9),
            "stopped": "sync" if self.stopped else None,
            "skipped": self.skipped,
        }
