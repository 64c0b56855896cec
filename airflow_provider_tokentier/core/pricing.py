"""Effective-dated price table and per-row cost computation.

Prices are USD per million tokens. Every cost is computed per result row by :func:`PriceTable.cost_usd`
and rounded to 9 decimals (nano-dollars), so the emulator's billing endpoint and our manifests, which
both call it, produce identical floats for identical rows; totals should be taken with :func:`sum_usd`,
whose result does not depend on the order of the rows.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypedDict

import msgspec

from airflow_provider_tokentier.core.models import is_variant_of

#: Price multiplier per service tier, applied on top of every token price (cache ones included).
TIER_MULTIPLIERS: Mapping[str, float] = {"standard": 1.0, "batch": 0.5, "flex": 0.5, "priority": 2.0}

# Anthropic prompt-caching multipliers of the base input price.
ANTHROPIC_CACHE_READ_MULTIPLIER = 0.1
ANTHROPIC_CACHE_WRITE_MULTIPLIER = 1.25  # 5-minute cache
ANTHROPIC_CACHE_WRITE_1H_MULTIPLIER = 2.0

_COST_DECIMALS = 9
# Rounds away float noise in derived rates (0.10 * 0.1 = 0.010000000000000002).
_RATE_DECIMALS = 12


class UnknownModelPriceWarning(UserWarning):
    """Warned once per (provider, model) and price table when no price is known for a model."""


class UsageDict(TypedDict):
    """The ``usage`` object of a result row."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int


class Usage(msgspec.Struct, frozen=True, gc=False):
    """Token usage normalized across providers (a struct: one is built per landed row).

    ``input_tokens`` are the uncached input tokens billed at the full input rate; cache reads and
    writes are counted separately. ``output_tokens`` include reasoning tokens (billed as output);
    ``reasoning_tokens`` is informational. ``cache_write_1h_tokens`` is the part of
    ``cache_write_tokens`` written to Anthropic's 1-hour cache (billed 2x instead of 1.25x); it is
    not part of the result-row schema, so a cost recomputed from a row's usage prices all writes
    as 5-minute writes.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def __post_init__(self) -> None:
        # Runs for every landed row: check the plain case (all ints >= 0) in one expression first.
        values = (
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.cache_write_1h_tokens,
        )
        if not (
            type(self.input_tokens) is int
            and type(self.output_tokens) is int
            and type(self.cache_read_tokens) is int
            and type(self.cache_write_tokens) is int
            and type(self.reasoning_tokens) is int
            and type(self.cache_write_1h_tokens) is int
            and min(values) >= 0
        ):
            for name, value in zip(_USAGE_FIELDS, values, strict=True):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"Usage.{name} must be a non-negative int, got {value!r}")
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise ValueError("Usage.cache_write_1h_tokens cannot exceed cache_write_tokens")

    def to_dict(self) -> UsageDict:
        """Return the result-row ``usage`` object (exactly the five schema keys)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        """Build from a result-row ``usage`` object; missing or null counts are 0."""
        return cls(
            input_tokens=_count(data, "input_tokens"),
            output_tokens=_count(data, "output_tokens"),
            cache_read_tokens=_count(data, "cache_read_tokens"),
            cache_write_tokens=_count(data, "cache_write_tokens"),
            reasoning_tokens=_count(data, "reasoning_tokens"),
            cache_write_1h_tokens=_count(data, "cache_write_1h_tokens"),
        )


_USAGE_FIELDS = Usage.__struct_fields__


def _count(data: Mapping[str, Any] | None, key: str) -> int:
    """Read a token count that providers may omit or send as null."""
    if not data:
        return 0
    value = data.get(key)
    return 0 if value is None else int(value)


def usage_from_anthropic(usage: Mapping[str, Any]) -> Usage:
    """Normalize an Anthropic ``Message.usage`` object.

    Anthropic already reports ``input_tokens`` without the cached ones, so they map one to one.
    """
    cache_writes = _count(usage, "cache_creation_input_tokens")
    # The 1-hour breakdown is a subset of all writes; a malformed report must not exceed it.
    one_hour_writes = min(_count(usage.get("cache_creation"), "ephemeral_1h_input_tokens"), cache_writes)
    return Usage(
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        cache_read_tokens=_count(usage, "cache_read_input_tokens"),
        cache_write_tokens=cache_writes,
        cache_write_1h_tokens=one_hour_writes,
    )


def usage_from_openai(usage: Mapping[str, Any]) -> Usage:
    """Normalize an OpenAI usage object.

    It may come from Chat Completions, Responses (also a Batch's ``usage``) or Embeddings.

    OpenAI counts cached tokens inside the prompt total, so ``input_tokens`` is prompt minus cached;
    reasoning tokens are already inside the completion total and stay there (billed as output).
    """
    if "input_tokens" in usage:  # Responses API and Batch objects
        prompt = _count(usage, "input_tokens")
        output = _count(usage, "output_tokens")
        cached = _count(usage.get("input_tokens_details"), "cached_tokens")
        reasoning = _count(usage.get("output_tokens_details"), "reasoning_tokens")
    else:  # Chat Completions, legacy Completions, Embeddings (no completion tokens)
        prompt = _count(usage, "prompt_tokens")
        output = _count(usage, "completion_tokens")
        cached = _count(usage.get("prompt_tokens_details"), "cached_tokens")
        reasoning = _count(usage.get("completion_tokens_details"), "reasoning_tokens")
    # A malformed report with more cached than prompt tokens must not produce negative input.
    cached = min(cached, prompt)
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=output,
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )


@dataclasses.dataclass(frozen=True)
class ModelPrice:
    """One effective-dated price entry, USD per million tokens, before any tier multiplier."""

    provider: str
    model: str
    effective: datetime.date
    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float

    @classmethod
    def create(
        cls,
        provider: str,
        model: str,
        *,
        input: float,
        output: float,
        effective: datetime.date = datetime.date.min,
        cached_input: float | None = None,
        cache_write: float | None = None,
        cache_write_1h: float | None = None,
    ) -> ModelPrice:
        """Build an entry, deriving the cache prices the provider's rules imply when not given.

        Anthropic: cache read 0.1x input, cache write 1.25x (5 min) or 2x (1 h). OpenAI: cached
        input is ``cached_input`` (default: the input price); there is no cache-write premium, so a
        write, should one ever be reported, is billed as ordinary input.
        """
        if provider == "anthropic":
            read = input * ANTHROPIC_CACHE_READ_MULTIPLIER if cached_input is None else cached_input
            write = input * ANTHROPIC_CACHE_WRITE_MULTIPLIER if cache_write is None else cache_write
            write_1h = (
                input * ANTHROPIC_CACHE_WRITE_1H_MULTIPLIER if cache_write_1h is None else cache_write_1h
            )
        else:
            read = input if cached_input is None else cached_input
            write = input if cache_write is None else cache_write
            write_1h = write if cache_write_1h is None else cache_write_1h
        rates = {
            "input": input,
            "output": output,
            "cache_read": read,
            "cache_write": write,
            "cache_write_1h": write_1h,
        }
        for name, rate in rates.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
                raise ValueError(f"{provider}/{model}: price {name!r} must be a finite number, got {rate!r}")
            if rate < 0:
                raise ValueError(f"{provider}/{model}: price {name!r} must not be negative, got {rate!r}")
        clean = {name: round(float(rate), _RATE_DECIMALS) for name, rate in rates.items()}
        return cls(
            provider=provider,
            model=model,
            effective=effective,
            input=clean["input"],
            output=clean["output"],
            cache_read=clean["cache_read"],
            cache_write=clean["cache_write"],
            cache_write_1h=clean["cache_write_1h"],
        )


_ANTHROPIC_EFFECTIVE = datetime.date(2026, 10, 1)
_OPENAI_EFFECTIVE = datetime.date(2026, 9, 1)

DEFAULT_PRICES: tuple[ModelPrice, ...] = (
    ModelPrice.create("anthropic", "claude-opus-5-5", input=4, output=20, effective=_ANTHROPIC_EFFECTIVE),
    ModelPrice.create("anthropic", "claude-sonnet-5-5", input=2, output=10, effective=_ANTHROPIC_EFFECTIVE),
    # List price for prompts up to 100K tokens; longer prompts cost more and are not modelled here.
    ModelPrice.create(
        "anthropic", "claude-haiku-5-5", input=0.10, output=0.50, effective=_ANTHROPIC_EFFECTIVE
    ),
    ModelPrice.create("anthropic", "claude-haiku-4-5", input=1, output=5, effective=_ANTHROPIC_EFFECTIVE),
    ModelPrice.create(
        "openai", "gpt-6-sol", input=2, output=10, cached_input=0.20, effective=_OPENAI_EFFECTIVE
    ),
    ModelPrice.create(
        "openai", "gpt-6.1-sol", input=2, output=10, cached_input=0.10, effective=_OPENAI_EFFECTIVE
    ),
    ModelPrice.create(
        "openai", "gpt-6-luna", input=0.10, output=0.50, cached_input=0.01, effective=_OPENAI_EFFECTIVE
    ),
    # Our assumption, not from a published price sheet: embeddings need a price to be billed at all.
    ModelPrice.create("openai", "text-embedding-4-small", input=0.02, output=0, effective=_OPENAI_EFFECTIVE),
)

_OVERRIDE_PRICE_KEYS = frozenset({"input", "output", "cached_input", "cache_write", "cache_write_1h"})
_OVERRIDE_KEYS = _OVERRIDE_PRICE_KEYS | {"effective"}


def tier_multiplier(tier: str) -> float:
    """Return the price multiplier for a service tier; ``ValueError`` for an unknown tier."""
    try:
        return TIER_MULTIPLIERS[tier]
    except KeyError:
        raise ValueError(f"unknown tier {tier!r}; expected one of {sorted(TIER_MULTIPLIERS)}") from None


class PriceTable:
    """An immutable set of effective-dated model prices.

    Lookups match the exact model id first, then the longest known id that the model id extends
    with a version suffix (``claude-sonnet-5-5-20261001`` -> ``claude-sonnet-5-5``). Unknown models
    are never priced: costs come back as ``None`` with one :class:`UnknownModelPriceWarning` per
    (provider, model) for the lifetime of the table.
    """

    def __init__(self, prices: Iterable[ModelPrice]) -> None:
        """Index ``prices``; a later entry with the same provider, model and date replaces an earlier one."""
        by_date: dict[tuple[str, str], dict[datetime.date, ModelPrice]] = {}
        for price in prices:
            by_date.setdefault((price.provider, price.model), {})[price.effective] = price
        self._entries: dict[tuple[str, str], tuple[ModelPrice, ...]] = {
            key: tuple(dated[day] for day in sorted(dated)) for key, dated in by_date.items()
        }
        self._warned: set[tuple[str, str]] = set()
        self._lookups: dict[tuple[str, str, datetime.date], ModelPrice | None] = {}
        self._warned_lock = threading.Lock()

    def prices(self) -> tuple[ModelPrice, ...]:
        """Return every entry, ordered by provider, model and effective date."""
        return tuple(price for key in sorted(self._entries) for price in self._entries[key])

    def _resolve_model(self, provider: str, model: str) -> str | None:
        if (provider, model) in self._entries:
            return model
        candidates = [
            known
            for known_provider, known in self._entries
            if known_provider == provider and is_variant_of(model, known)
        ]
        return max(candidates, key=len) if candidates else None

    def lookup(self, provider: str, model: str, on: datetime.date | None = None) -> ModelPrice | None:
        """Return the price in force on ``on`` (default: today, UTC) or ``None`` if none is known.

        The entry used is the latest one whose effective date is on or before ``on``.
        """
        day = _as_date(on)
        key = (provider, model, day)
        if key not in self._lookups:  # landing prices every row: resolve each model once per day
            known = self._resolve_model(provider, model)
            in_force = (
                [] if known is None else [p for p in self._entries[(provider, known)] if p.effective <= day]
            )
            self._lookups[key] = in_force[-1] if in_force else None
        return self._lookups[key]

    def cost_usd(
        self,
        provider: str,
        model: str,
        tier: str,
        usage: Usage,
        on: datetime.date | None = None,
    ) -> float | None:
        """Return the cost in USD of ``usage`` on ``tier``, rounded to 9 decimals.

        ``None`` when no price is known for the model on that date (warned once per model).
        Cache prices are multiplied by the tier multiplier like every other token price.
        """
        multiplier = tier_multiplier(tier)
        price = self.price_or_warn(provider, model, on)
        if price is None:
            return None
        return cost_at(per_million_usd(price, usage), multiplier)

    def price_or_warn(self, provider: str, model: str, on: datetime.date | None = None) -> ModelPrice | None:
        """`lookup`, warning (once per model) when no price is known."""
        price = self.lookup(provider, model, on)
        if price is None:
            self._warn_unknown(provider, model, on)
        return price

    def _warn_unknown(self, provider: str, model: str, on: datetime.date | None) -> None:
        key = (provider, model)
        with self._warned_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(
            f"no price known for {provider} model {model!r} on {_as_date(on).isoformat()}; its cost is "
            "reported as null. Add it with PriceTable.with_overrides().",
            UnknownModelPriceWarning,
            stacklevel=4,
        )

    def with_overrides(self, source: Mapping[str, Any] | str | os.PathLike[str]) -> PriceTable:
        """Return a new table with entries added or replaced from ``source``.

        ``source`` is a mapping, a JSON string, or a path to a JSON file, shaped as::

            {"anthropic": {"claude-x": {"input": 1, "output": 5, "cached_input": 0.1,
                                        "cache_write": 1.25, "cache_write_1h": 2,
                                        "effective": "2026-11-01"}},
             "openai": {"gpt-y": [{"input": 2, "output": 8, "effective": "2026-09-01"},
                                  {"input": 1, "output": 4, "effective": "2026-12-01"}]}}

        Prices are USD per million tokens at the standard tier. ``input`` and ``output`` are
        required; ``cached_input`` (cache read), ``cache_write`` and ``cache_write_1h`` default
        to the provider's rules (see :meth:`ModelPrice.create`); ``effective`` (ISO date) defaults
        to "always". A model may list several dated entries. An entry with the same provider, model
        and effective date as an existing one replaces it; other dates are kept. An undated entry
        is the model's price on every date: it replaces all of the table's entries for that model
        (otherwise a dated built-in entry would still win from its date on).
        """
        overrides = _parse_overrides(_load_override_source(source))
        undated = {(p.provider, p.model) for p in overrides if p.effective == datetime.date.min}
        kept = [p for p in self.prices() if (p.provider, p.model) not in undated]
        return PriceTable([*kept, *overrides])


def per_million_usd(price: ModelPrice, usage: Usage) -> float:
    """What ``usage`` costs at ``price`` on the standard tier, times a million (unrounded)."""
    five_minute_writes = usage.cache_write_tokens - usage.cache_write_1h_tokens
    return (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + five_minute_writes * price.cache_write
        + usage.cache_write_1h_tokens * price.cache_write_1h
    )


def cost_at(per_million: float, multiplier: float) -> float:
    """The cost in USD of a `per_million_usd` figure at a tier ``multiplier``, rounded to 9 decimals."""
    return round_to_nanos(per_million * multiplier / 1_000_000)


#: Below this, a float's rounding error (half an ulp) is under 2**-11, well inside the 0.001
#: margin `round_to_nanos` leaves around half-integers.
_EXACT_SCALED_LIMIT = 2.0**43


def round_to_nanos(value: float) -> float:
    """``round(value, 9)``, the same float, without its decimal conversion in the common case.

    ``round(value, 9)`` rounds the exact value to 9 decimals through a decimal string (about a
    microsecond; landing does it twice per row). Rounding ``value * 1e9`` to the integer ``k``
    gives the same decimal whenever the product is more than its own rounding error away from a
    half-integer, and ``k / 1e9`` is then the float nearest to it, which is what ``round``
    returns. Near a half-integer (or out of range) ``round`` itself decides.
    """
    scaled = value * 1e9
    if 0.0 < scaled < _EXACT_SCALED_LIMIT:
        whole = round(scaled)
        if -0.499 < scaled - whole < 0.499:
            return whole / 1e9
    return round(value, _COST_DECIMALS)


def _as_date(on: datetime.date | None) -> datetime.date:
    if on is None:
        return datetime.datetime.now(datetime.timezone.utc).date()
    # datetime is a date subclass but does not compare with plain dates.
    return on.date() if isinstance(on, datetime.datetime) else on


def _load_override_source(source: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    # A JSON document starts with "{" (or "[" when malformed); a file path never does in practice.
    if isinstance(source, str) and source.lstrip().startswith(("{", "[")):
        loaded = json.loads(source)
    else:
        loaded = json.loads(Path(source).read_text(encoding="utf-8"))
    if not isinstance(loaded, Mapping):
        raise ValueError("price overrides must be a JSON object keyed by provider")
    return loaded


def _parse_overrides(overrides: Mapping[str, Any]) -> list[ModelPrice]:
    parsed: list[ModelPrice] = []
    for provider, models in overrides.items():
        if not isinstance(models, Mapping):
            raise ValueError(f"price overrides for {provider!r} must be an object keyed by model id")
        for model, spec in models.items():
            specs = spec if isinstance(spec, list) else [spec]
            for entry in specs:
                parsed.append(_parse_override_entry(provider, model, entry))
    return parsed


def _parse_override_entry(provider: str, model: str, entry: Any) -> ModelPrice:
    where = f"price override {provider}/{model}"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be an object, got {type(entry).__name__}")
    unknown = set(entry) - _OVERRIDE_KEYS
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_OVERRIDE_KEYS)}")
    missing = {"input", "output"} - set(entry)
    if missing:
        raise ValueError(f"{where} is missing {sorted(missing)}")
    effective = entry.get("effective")
    try:
        day = datetime.date.min if effective is None else datetime.date.fromisoformat(str(effective))
    except ValueError:
        raise ValueError(f"{where}: effective must be an ISO date, got {effective!r}") from None
    rates = {key: entry[key] for key in _OVERRIDE_PRICE_KEYS if key in entry}
    return ModelPrice.create(provider, model, effective=day, **rates)


@functools.lru_cache(maxsize=1)
def default_price_table() -> PriceTable:
    """Return the shared table of :data:`DEFAULT_PRICES` (shared, so unknown models warn once)."""
    return PriceTable(DEFAULT_PRICES)


def format_usd(value: float | None, *, unknown: str = "unknown", places: int | None = None) -> str:
    """A dollar amount for people: ``$1,234.50`` from about a dollar up, ``$0.0123`` below.

    ``places`` fixes the decimals instead (log lines that must add up exactly use 6). ``None``
    (no known price) reads as ``unknown``.
    """
    if value is None:
        return unknown
    if places is not None:
        return f"${value:.{places}f}"
    return f"${value:,.2f}" if abs(value) >= 0.995 or value == 0 else f"${value:.4f}"


def savings_usd(standard_cost: float | None, cost: float | None) -> float | None:
    """Return what running at the tier used saved against the standard tier, or ``None`` if unknown."""
    if standard_cost is None or cost is None:
        return None
    return round(standard_cost - cost, _COST_DECIMALS)


def sum_usd(costs: Iterable[float | None]) -> float | None:
    """Sum per-row costs exactly (``math.fsum``), so the total does not depend on row order.

    Returns ``None`` if any cost is ``None``: a total that silently skipped unpriced rows would
    understate the bill.
    """
    unknown = False

    def known_costs() -> Iterable[float]:
        nonlocal unknown
        for cost in costs:
            if cost is None:
                unknown = True
            else:
                yield cost

    total = math.fsum(known_costs())
    return None if unknown else round(total, _COST_DECIMALS)
