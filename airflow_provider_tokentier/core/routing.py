"""The tier router: put a workload on the cheapest tier whose turnaround it can tolerate.

:func:`choose_tier` answers one question -- *does anything wall-clock-sensitive consume this
output, and by when?* -- from a :class:`WorkloadProfile`, observed batch turnaround
(:class:`TurnaroundHistory`) and the price table. The rules, in the order they are applied:

1. A forced tier wins (it must exist, and ``flex`` must be offered for the model).
2. Anything a human or an agent loop waits on (``interactive``), and sub-second budgets
   -> ``standard``.
3. ``batch`` when all of these hold:

   * the budget covers the batch turnaround p95 (from this provider/model's history once it has
     :data:`MIN_HISTORY_SAMPLES` samples, else :data:`DEFAULT_BATCH_P95_S`) times the chained
     batch stages up to the consumer, plus a rescue margin (time to cancel and rerun the whole
     workload on ``standard``) -- a chain that cannot fit is named in the reasons;
   * the expected saving against ``standard`` reaches ``min_batch_savings_usd`` (the engineering
     crossover: below it the hours of latency and the batch failure modes are not worth it);
   * for caching-dominated workloads (>= :data:`CACHE_DOMINATED_RATIO` of input tokens cached on
     the synchronous path) batch is still cheaper than the best synchronous tier with batch cache
     hits treated as best effort (none assumed).

4. Otherwise ``flex`` (seconds to minutes) when the provider and model offer it and its typical
   turnaround fits the budget; else ``standard``.

Costs: ``batch`` is always estimated with no cache hits (they are best effort on both providers),
``standard`` and ``flex`` with ``cached_input_ratio`` of the input read from the cache. Cache
writes are not modelled (they are amortized over the hits). Everything here is pure: no Airflow
and no SDK imports.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_provider_tokentier.core.chunking import estimate_tokens
from airflow_provider_tokentier.core.models import FLEX_MODELS, is_flex_model
from airflow_provider_tokentier.core.pricing import (
    PriceTable,
    Usage,
    default_price_table,
    format_usd,
    savings_usd,
    tier_multiplier,
)
from airflow_provider_tokentier.core.requests import PROVIDERS
from airflow_provider_tokentier.core.result_rows import TIERS

__all__ = [
    "CACHE_DOMINATED_RATIO",
    "DEFAULT_BATCH_P50_S",
    "DEFAULT_BATCH_P95_S",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MIN_BATCH_SAVINGS_USD",
    "FLEX_MODELS",
    "MIN_HISTORY_SAMPLES",
    "TIERS",
    "TierDecision",
    "TurnaroundHistory",
    "WorkloadProfile",
    "choose_tier",
    "estimate_costs",
    "estimate_rescue_margin_s",
    "format_duration",
    "is_flex_model",
    "parse_duration",
    "profile_from_requests",
    "synchronous_turnaround_s",
]

#: The engineering crossover, USD saved per run against ``standard``. At the 0.5x batch rate it
#: means batch only for workloads that would cost more than about $2 on ``standard``: below that,
#: an hour or more of latency, a deferred sensor and the batch failure modes (expiry, stuck
#: batches, re-batch rounds) cost more in attention than the batch discount saves. Workloads that
#: run many times a day can lower it; the nightly 5,000-doc refresh clears it, a one-off 50-doc
#: summary does not.
DEFAULT_MIN_BATCH_SAVINGS_USD = 1.00

#: Share of input tokens read from the prompt cache on the synchronous path from which a workload
#: counts as caching-dominated: the cache (0.1x on Anthropic, 0.05x-0.1x on OpenAI) then outweighs
#: the 0.5x batch discount on input, and batch cache hits are only best effort.
CACHE_DOMINATED_RATIO = 0.8

#: Budgets below this many seconds are "sub-second": only ``standard`` can serve them.
SUB_SECOND_S = 1.0

#: Observed turnarounds needed before history replaces the defaults below.
MIN_HISTORY_SAMPLES = 20

#: Batch turnaround defaults (submitted -> ended) used until history is trusted. Both providers say
#: most batches end within about an hour and all within the 24 h window; the p95 of 6 h is our
#: deliberately pessimistic guess for busy periods. The tail beyond it is what the rescue margin
#: (cancel, then rerun the remainder on a synchronous tier) is for.
DEFAULT_BATCH_P50_S = 3600.0
DEFAULT_BATCH_P95_S = 6 * 3600.0

#: Synchronous latency model (per request, no queueing): a fixed overhead, prefill and decode.
STANDARD_REQUEST_OVERHEAD_S = 1.0
PREFILL_TOKENS_PER_S = 10_000.0
DECODE_TOKENS_PER_S = 50.0
#: p95 of a standard request as a multiple of its p50.
STANDARD_P95_FACTOR = 3.0
#: Flex is "slower": its p50 is this multiple of standard's; its p95 is OpenAI's recommended
#: 15-minute client timeout (a request still waiting then is retried or falls back to standard).
FLEX_SLOWDOWN = 2.0
FLEX_REQUEST_P95_S = 15 * 60.0
#: Synchronous requests in flight at once (the sync-tier executor's default concurrency).
DEFAULT_CONCURRENCY = 16
#: How long a cancel takes to settle: Anthropic ``canceling`` until in-flight requests finish
#: (minutes), OpenAI ``cancelling`` up to ~10 minutes.
CANCEL_LATENCY_S: Mapping[str, float] = {"anthropic": 5 * 60.0, "openai": 10 * 60.0}


# -- durations ---------------------------------------------------------------------------------
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float | int) -> float:
    """Parse ``500ms``, ``90s``, ``15m``, ``8h``, ``2d`` or a bare number of seconds into seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            stripped = str(text).strip()
            if stripped.startswith("-"):
                raise ValueError(f"a duration cannot be negative, got {text!r}")
            raise ValueError(f"cannot parse duration {text!r}; use e.g. 500ms, 90s, 15m, 8h or 2d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds for people: ``450ms``, ``42s``, ``15m``, ``7h 05m``, ``2d 03h``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h" if hours else f"{days}d"


# -- inputs ------------------------------------------------------------------------------------
def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_number(name: str, value: Any, *, minimum: float = 0.0, maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class WorkloadProfile:
    """What the router needs to know about a workload.

    ``latency_budget_s`` (seconds from now) and/or ``deadline`` (timezone-aware) say when the
    consumer needs the output; with both, the earlier one counts. At least one is required unless
    ``interactive`` (a human or an agent loop waits on it). ``cached_input_ratio`` is the share of
    input tokens read from the prompt cache on the synchronous path. ``chained_batch_stages``
    counts the batch stages from this one to the consumer, this one included.
    ``expected_spend_usd`` is the expected cost on ``standard``; when given it scales the
    per-tier estimates (otherwise they come from token counts and prices).
    ``flex_capable=None`` looks the model up in :data:`FLEX_MODELS`. ``concurrency`` is how many
    synchronous requests run at once on flex/standard (for finish-time estimates).
    """

    provider: str
    model: str
    request_count: int
    input_tokens_per_request: int
    output_tokens_per_request: int
    latency_budget_s: float | None = None
    deadline: datetime.datetime | None = None
    interactive: bool = False
    cached_input_ratio: float = 0.0
    chained_batch_stages: int = 1
    expected_spend_usd: float | None = None
    min_batch_savings_usd: float = DEFAULT_MIN_BATCH_SAVINGS_USD
    flex_capable: bool | None = None
    concurrency: int = DEFAULT_CONCURRENCY

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {self.provider!r}; expected one of {PROVIDERS}")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        _check_int("request_count", self.request_count, 1)
        _check_int("input_tokens_per_request", self.input_tokens_per_request, 0)
        _check_int("output_tokens_per_request", self.output_tokens_per_request, 0)
        _check_int("chained_batch_stages", self.chained_batch_stages, 1)
        _check_int("concurrency", self.concurrency, 1)
        if self.latency_budget_s is not None:
            _check_number("latency_budget_s", self.latency_budget_s)
            if self.latency_budget_s <= 0:
                raise ValueError(f"latency_budget_s must be positive, got {self.latency_budget_s!r}")
        if self.deadline is not None:
            if not isinstance(self.deadline, datetime.datetime):
                raise ValueError(f"deadline must be a datetime, got {type(self.deadline).__name__}")
            if self.deadline.tzinfo is None or self.deadline.utcoffset() is None:
                raise ValueError("deadline must be timezone-aware (e.g. 2026-11-16T09:00:00+00:00)")
        if self.latency_budget_s is None and self.deadline is None and not self.interactive:
            raise ValueError(
                "give a latency_budget_s and/or a deadline (or interactive=True when a human or an "
                "agent loop waits on the output)"
            )
        _check_number("cached_input_ratio", self.cached_input_ratio, minimum=0.0, maximum=1.0)
        if self.expected_spend_usd is not None:
            _check_number("expected_spend_usd", self.expected_spend_usd)
        _check_number("min_batch_savings_usd", self.min_batch_savings_usd)
        if self.flex_capable is not None and not isinstance(self.flex_capable, bool):
            raise ValueError(f"flex_capable must be True, False or None, got {self.flex_capable!r}")

    @property
    def offers_flex(self) -> bool:
        """``flex_capable`` when set, else whether the model is in :data:`FLEX_MODELS`."""
        if self.flex_capable is not None:
            return self.flex_capable
        return is_flex_model(self.provider, self.model)

    def budget_s(self, now: datetime.datetime) -> float | None:
        """Seconds available from ``now``: the smaller of the budget and the time to the deadline.

        ``ValueError`` when the deadline is not after ``now``; ``None`` when neither is set.
        """
        candidates = [] if self.latency_budget_s is None else [float(self.latency_budget_s)]
        if self.deadline is not None:
            left = (self.deadline - now).total_seconds()
            if left <= 0:
                raise ValueError(
                    f"deadline {self.deadline.isoformat()} is in the past (now {now.isoformat()})"
                )
            candidates.append(left)
        return min(candidates) if candidates else None


def profile_from_requests(
    rows: Iterable[Mapping[str, Any]],
    *,
    provider: str,
    model: str,
    output_tokens_per_request: int | None = None,
    **options: Any,
) -> WorkloadProfile:
    """Describe provider-native request rows as a :class:`WorkloadProfile`.

    Input tokens per request are the mean of :func:`~airflow_provider_tokentier.core.chunking.estimate_tokens`
    over each row's body; output tokens, unless given, the mean of the rows' output caps
    (``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``), an upper bound.
    ``options`` are passed on to :class:`WorkloadProfile` (budget, deadline, ...).
    """
    count = input_total = output_total = 0
    for row in rows:
        body = row.get("params") if provider == "anthropic" else row.get("body")
        body = body if isinstance(body, Mapping) else {}
        count += 1
        input_total += estimate_tokens({k: v for k, v in body.items() if not k.startswith("max_")})
        cap = next(
            (body[k] for k in ("max_tokens", "max_completion_tokens", "max_output_tokens") if body.get(k)),
            0,
        )
        output_total += int(cap)
    if count == 0:
        raise ValueError("request_count must be an int >= 1, got 0 (no request rows)")
    output = output_tokens_per_request if output_tokens_per_request is not None else -(-output_total // count)
    return WorkloadProfile(
        provider=provider,
        model=model,
        request_count=count,
        input_tokens_per_request=-(-input_total // count),
        output_tokens_per_request=output,
        **options,
    )


# -- turnaround --------------------------------------------------------------------------------
def _percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation): always an observed value."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered) - 1e-9) - 1)]


@dataclasses.dataclass(frozen=True)
class TurnaroundHistory:
    """Observed batch turnarounds (seconds, submitted -> ended) of one provider and model.

    Percentiles come from the samples once there are at least ``min_samples`` of them; before
    that the documented defaults (:data:`DEFAULT_BATCH_P50_S`, :data:`DEFAULT_BATCH_P95_S`) are
    used, because a handful of lucky runs must not talk the router into a tight chain.
    """

    provider: str
    model: str
    samples: tuple[float, ...] = ()
    min_samples: int = MIN_HISTORY_SAMPLES
    default_p50_s: float = DEFAULT_BATCH_P50_S
    default_p95_s: float = DEFAULT_BATCH_P95_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", tuple(float(s) for s in self.samples))
        for value in self.samples:
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"turnaround samples must be finite and >= 0, got {value!r}")
        _check_int("min_samples", self.min_samples, 1)

    @property
    def trusted(self) -> bool:
        """Whether there are enough samples to replace the defaults."""
        return len(self.samples) >= self.min_samples

    def p50(self) -> float:
        """Median turnaround in seconds (history when trusted, else the default)."""
        return _percentile(self.samples, 0.50) if self.trusted else self.default_p50_s

    def p95(self) -> float:
        """95th-percentile turnaround in seconds (history when trusted, else the default)."""
        return _percentile(self.samples, 0.95) if self.trusted else self.default_p95_s

    def with_sample(self, seconds: float) -> TurnaroundHistory:
        """A copy with one more observation."""
        return dataclasses.replace(self, samples=(*self.samples, seconds))

    def describe(self) -> str:
        """Where the p95 comes from, for reasons and logs."""
        if self.trusted:
            return f"p95 of {len(self.samples)} recorded {self.provider}/{self.model} batches"
        return (
            f"the default: {len(self.samples)} of the {self.min_samples} {self.provider}/{self.model} "
            "batches needed to trust history are recorded"
        )


def synchronous_turnaround_s(
    tier: str,
    request_count: int,
    input_tokens_per_request: int,
    output_tokens_per_request: int,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> tuple[float, float]:
    """Estimate (p50, p95) seconds to run a workload on ``standard`` or ``flex``.

    Requests run in waves of ``concurrency``; a request's p50 is a fixed overhead plus prefill and
    decode time (flex: :data:`FLEX_SLOWDOWN` times that), and the p95 adds one slow request to the
    last wave. Rate limits are not modelled.
    """
    if tier not in ("standard", "flex"):
        raise ValueError(f"synchronous tier must be 'standard' or 'flex', got {tier!r}")
    per_request = (
        STANDARD_REQUEST_OVERHEAD_S
        + input_tokens_per_request / PREFILL_TOKENS_PER_S
        + output_tokens_per_request / DECODE_TOKENS_PER_S
    )
    if tier == "flex":
        per_request *= FLEX_SLOWDOWN
        slow = max(per_request, FLEX_REQUEST_P95_S)
    else:
        slow = per_request * STANDARD_P95_FACTOR
    waves = math.ceil(request_count / concurrency)
    return waves * per_request, (waves - 1) * per_request + slow


def estimate_rescue_margin_s(
    provider: str,
    remaining_requests: int,
    input_tokens_per_request: int,
    output_tokens_per_request: int,
    *,
    rescue_tier: str = "standard",
    concurrency: int = DEFAULT_CONCURRENCY,
) -> float:
    """Time to rescue a batch before its deadline.

    That is the cancel latency plus the remaining requests' p95 on ``rescue_tier``.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
    _check_int("remaining_requests", remaining_requests, 0)
    if remaining_requests == 0:
        return CANCEL_LATENCY_S[provider]
    _, p95 = synchronous_turnaround_s(
        rescue_tier, remaining_requests, input_tokens_per_request, output_tokens_per_request, concurrency
    )
    return CANCEL_LATENCY_S[provider] + p95


# -- costs -------------------------------------------------------------------------------------
def estimate_costs(
    profile: WorkloadProfile,
    prices: PriceTable | None = None,
    on: datetime.date | None = None,
) -> dict[str, float | None]:
    """Estimated USD cost of the whole workload on each tier (``flex``: ``None`` if not offered).

    Synchronous tiers read ``cached_input_ratio`` of the input from the cache; batch assumes no
    cache hits. ``None`` for an unknown model (one warning) unless ``expected_spend_usd`` is set,
    in which case the tier multipliers scale it.
    """
    table = prices if prices is not None else default_price_table()
    total_in = profile.request_count * profile.input_tokens_per_request
    total_out = profile.request_count * profile.output_tokens_per_request
    cached = round(total_in * profile.cached_input_ratio)
    synchronous = Usage(input_tokens=total_in - cached, cache_read_tokens=cached, output_tokens=total_out)
    best_effort = Usage(input_tokens=total_in, output_tokens=total_out)
    costs: dict[str, float | None] = {
        "standard": table.cost_usd(profile.provider, profile.model, "standard", synchronous, on),
        "flex": (
            table.cost_usd(profile.provider, profile.model, "flex", synchronous, on)
            if profile.offers_flex
            else None
        ),
        "batch": table.cost_usd(profile.provider, profile.model, "batch", best_effort, on),
    }
    spend = profile.expected_spend_usd
    if spend is None:
        return costs
    base = costs["standard"]
    scaled: dict[str, float | None] = {}
    for tier in TIERS:
        if tier == "flex" and not profile.offers_flex:
            scaled[tier] = None
        elif base and costs[tier] is not None:
            scaled[tier] = round(spend * (costs[tier] or 0.0) / base, 9)
        else:
            scaled[tier] = round(spend * tier_multiplier(tier), 9)
    return scaled


# -- the decision ------------------------------------------------------------------------------
def _iso(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclasses.dataclass(frozen=True)
class TierDecision:
    """The router's answer. ``to_dict()`` is what results manifests carry under ``decision``.

    ``estimated_cost_usd`` and ``expected_finish_by_tier`` cover every tier (``flex`` is ``None``
    when not offered); ``expected_finish``/``expected_finish_p95`` are the chosen tier's, for this
    stage. ``budget_s`` is the time the consumer allows (``None`` for interactive work with no
    budget); ``rescue_margin_s`` the margin kept for a deadline rescue when batching.
    """

    tier: str
    provider: str
    model: str
    estimated_cost_usd: Mapping[str, float | None]
    expected_finish: datetime.datetime
    expected_finish_p95: datetime.datetime
    expected_finish_by_tier: Mapping[str, tuple[datetime.datetime, datetime.datetime] | None]
    reasons: tuple[str, ...]
    decided_at: datetime.datetime
    budget_s: float | None = None
    rescue_margin_s: float | None = None
    forced: bool = False

    @property
    def savings_usd(self) -> float | None:
        """What the chosen tier is expected to save against ``standard``."""
        return savings_usd(self.estimated_cost_usd.get("standard"), self.estimated_cost_usd.get(self.tier))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO 8601 datetimes)."""
        return {
            "tier": self.tier,
            "provider": self.provider,
            "model": self.model,
            "forced": self.forced,
            "estimated_cost_usd": dict(self.estimated_cost_usd),
            "savings_usd": self.savings_usd,
            "expected_finish": _iso(self.expected_finish),
            "expected_finish_p95": _iso(self.expected_finish_p95),
            "expected_finish_by_tier": {
                tier: None if window is None else {"p50": _iso(window[0]), "p95": _iso(window[1])}
                for tier, window in self.expected_finish_by_tier.items()
            },
            "budget_s": self.budget_s,
            "rescue_margin_s": self.rescue_margin_s,
            "decided_at": _iso(self.decided_at),
            "reasons": list(self.reasons),
        }


def choose_tier(
    profile: WorkloadProfile,
    *,
    history: TurnaroundHistory | None = None,
    prices: PriceTable | None = None,
    now: datetime.datetime | None = None,
    rescue_margin_s: float | None = None,
    force_tier: str | None = None,
) -> TierDecision:
    """Pick the cheapest tier whose turnaround ``profile`` can tolerate (rules: module docstring).

    ``history`` must be this provider/model's (``None``: defaults). ``rescue_margin_s`` defaults
    to :func:`estimate_rescue_margin_s` for the whole workload on ``standard``. ``force_tier``
    skips the rules but still estimates every tier. ``ValueError`` on bad inputs.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    history = _checked_inputs(profile, history, now, rescue_margin_s, force_tier)
    budget = profile.budget_s(now)
    flex = profile.offers_flex
    costs = estimate_costs(profile, prices, now.date())
    shape = (profile.request_count, profile.input_tokens_per_request, profile.output_tokens_per_request)
    durations: dict[str, tuple[float, float] | None] = {
        "standard": synchronous_turnaround_s("standard", *shape, profile.concurrency),
        "flex": synchronous_turnaround_s("flex", *shape, profile.concurrency) if flex else None,
        "batch": (history.p50(), history.p95()),
    }
    margin = (
        rescue_margin_s
        if rescue_margin_s is not None
        else estimate_rescue_margin_s(profile.provider, *shape, concurrency=profile.concurrency)
    )

    reasons: list[str] = []
    if force_tier is not None:
        tier = force_tier
        reasons.append(f"The {tier} tier was forced by the caller; the router's rules were not applied.")
    elif profile.interactive:
        tier = "standard"
        reasons.append(
            "A human or an agent loop waits on this output, so it runs on standard: flex and batch "
            "trade latency for price."
        )
    elif budget is not None and budget < SUB_SECOND_S:
        tier = "standard"
        reasons.append(f"The {format_duration(budget)} budget is sub-second: only standard can meet it.")
    else:
        assert budget is not None  # not interactive, so the profile has a budget or a deadline
        tier = _rule_based_tier(profile, budget, costs, durations, history, margin, reasons)
    reasons.extend(_closing_reasons(profile, tier, budget, costs, durations))

    finishes = {
        name: None if window is None else (_after(now, window[0]), _after(now, window[1]))
        for name, window in durations.items()
    }
    chosen = finishes[tier]
    assert chosen is not None
    return TierDecision(
        tier=tier,
        provider=profile.provider,
        model=profile.model,
        estimated_cost_usd=costs,
        expected_finish=chosen[0],
        expected_finish_p95=chosen[1],
        expected_finish_by_tier=finishes,
        reasons=tuple(reasons),
        decided_at=now,
        budget_s=budget,
        rescue_margin_s=margin if tier == "batch" else None,
        forced=force_tier is not None,
    )


def _after(now: datetime.datetime, seconds: float) -> datetime.datetime:
    return now + datetime.timedelta(seconds=round(seconds, 3))


def _checked_inputs(
    profile: WorkloadProfile,
    history: TurnaroundHistory | None,
    now: datetime.datetime,
    rescue_margin_s: float | None,
    force_tier: str | None,
) -> TurnaroundHistory:
    """Check `choose_tier`'s arguments (``ValueError`` names the bad one); the history to use."""
    if force_tier is not None and force_tier not in TIERS:
        raise ValueError(f"unknown tier {force_tier!r}; expected one of {TIERS}")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if history is None:
        history = TurnaroundHistory(profile.provider, profile.model)
    elif (history.provider, history.model) != (profile.provider, profile.model):
        raise ValueError(
            f"turnaround history is for {history.provider}/{history.model}, "
            f"not {profile.provider}/{profile.model}"
        )
    if rescue_margin_s is not None:
        _check_number("rescue_margin_s", rescue_margin_s)
    if force_tier == "flex" and not profile.offers_flex:
        raise ValueError(f"{profile.provider} model {profile.model!r} does not offer the flex tier")
    return history


def _closing_reasons(
    profile: WorkloadProfile,
    tier: str,
    budget: float | None,
    costs: Mapping[str, float | None],
    durations: Mapping[str, tuple[float, float] | None],
) -> list[str]:
    """What to add once the tier is chosen: a budget even standard misses, the cost, no price."""
    reasons: list[str] = []
    if tier == "standard" and budget is not None:
        p50 = durations["standard"]
        if p50 is not None and p50[0] > budget:
            reasons.append(
                f"Even standard is expected to take {format_duration(p50[0])}, more than the "
                f"{format_duration(budget)} budget; it is the fastest tier."
            )
    saved = savings_usd(costs["standard"], costs[tier])
    if tier != "standard" and saved is not None:
        reasons.append(
            f"Expected cost {format_usd(costs[tier])} instead of {format_usd(costs['standard'])} on standard."
        )
    if costs["standard"] is None:
        reasons.append(
            f"No price is known for {profile.provider}/{profile.model}: costs are unknown (add a "
            "[tokentier] prices override or pass expected_spend_usd)."
        )
    return reasons


def _rule_based_tier(
    profile: WorkloadProfile,
    budget: float,
    costs: Mapping[str, float | None],
    durations: Mapping[str, tuple[float, float] | None],
    history: TurnaroundHistory,
    margin: float,
    reasons: list[str],
) -> str:
    """Rules 3 and 4 of the module docstring; appends the sentences that explain the choice."""
    flex_window = durations["flex"]
    flex_fits = flex_window is not None and flex_window[0] <= budget

    # Rule 3: batch, if the chain fits, the saving clears the crossover, and caching doesn't win.
    blockers: list[str] = []
    stages = profile.chained_batch_stages
    p95 = history.p95()
    needed = p95 * stages + margin
    chain = f"a chain of {stages} batch stages" if stages > 1 else "a single batch stage"
    if needed > budget:
        blockers.append(
            f"Batch does not fit: {chain} needs {format_duration(p95 * stages)} at p95 "
            f"({format_duration(p95)} per stage; {history.describe()}) plus a "
            f"{format_duration(margin)} rescue margin, {format_duration(needed)} in all, more than "
            f"the {format_duration(budget)} budget."
        )
    standard_cost, batch_cost = costs["standard"], costs["batch"]
    saving = savings_usd(standard_cost, batch_cost)
    if saving is not None and saving < 0:
        blockers.append(
            f"Batch would cost {format_usd(-saving)} more than standard: batch cache hits are best effort, "
            "so none are assumed, and the synchronous cache discount is worth more."
        )
    elif saving is not None and saving < profile.min_batch_savings_usd:
        blockers.append(
            f"Batch would save only {format_usd(saving)} against standard, under the "
            f"{format_usd(profile.min_batch_savings_usd)} crossover (min_batch_savings_usd): not worth "
            "hours of latency and the batch failure modes."
        )
    if profile.cached_input_ratio >= CACHE_DOMINATED_RATIO:
        sync_tier = "flex" if flex_fits else "standard"
        sync_cost = costs[sync_tier]
        share = f"{profile.cached_input_ratio:.0%}"
        if batch_cost is not None and sync_cost is not None and batch_cost >= sync_cost:
            blockers.append(
                f"Caching-dominated: {share} of input is cached on the synchronous path, while batch "
                f"cache hits are best effort (none assumed), so batch ({format_usd(batch_cost)}) is not "
                f"cheaper than {sync_tier} ({format_usd(sync_cost)})."
            )
        else:
            reasons.append(
                f"Caching-dominated ({share} of input cached) but batch stays cheaper "
                f"({format_usd(batch_cost)}) than {sync_tier} ({format_usd(sync_cost)}) "
                "even with no batch cache hits."
            )
    if not blockers:
        if saving is None:
            reasons.append(
                "No price is known, so the savings crossover could not be checked; routed on time alone."
            )
        reasons.append(
            f"The {format_duration(budget)} budget covers {chain} at p95 "
            f"({format_duration(p95)} per stage; {history.describe()}) plus a "
            f"{format_duration(margin)} rescue margin: batch at half price."
        )
        return "batch"
    reasons.extend(blockers)

    # Rule 4: flex for seconds to minutes where offered, else standard.
    if flex_window is None:
        reasons.append(f"{profile.provider}/{profile.model} offers no flex tier, so it runs on standard.")
        return "standard"
    if not flex_fits:
        reasons.append(
            f"Flex would typically take {format_duration(flex_window[0])}, more than the "
            f"{format_duration(budget)} budget, so it runs on standard."
        )
        return "standard"
    reasons.append(
        f"Flex fits: typically {format_duration(flex_window[0])} for the workload at the batch rate; "
        "requests flex cannot serve (429 resource unavailable) fall back to standard."
    )
    if flex_window[1] > budget:
        reasons.append(
            f"Flex's slow tail ({format_duration(flex_window[1])} at p95) exceeds the budget: keep "
            "flex patience short enough for the standard fallback to finish in time."
        )
    return "flex"
