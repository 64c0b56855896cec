"""Shared emulator state: settings, virtual clock, deterministic randomness, ids, billing, spool.

The provider modules (`anthropic_api`, `openai_api`) keep their own stores and register them
here so `reset` and the admin endpoints reach them.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from airflow_provider_tokentier.core.pricing import PriceTable, Usage, default_price_table
from airflow_provider_tokentier.testing.emulator.clock import VirtualClock
from airflow_provider_tokentier.testing.emulator.config import EmulatorConfig


class ProviderStore(Protocol):
    """What a provider module's store offers to the shared admin endpoints."""

    def reset(self) -> None:
        """Forget everything the store holds."""

    def summary(self) -> list[dict[str, Any]]:
        """One dict per batch for the admin endpoint."""


class Billing:
    """What the emulated providers would bill, priced with tokentier's own price table."""

    def __init__(self, prices: PriceTable) -> None:
        self._prices = prices
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero the totals."""
        with self._lock:
            self._usd = 0.0
            self._requests = 0
            self._by_tier: dict[str, dict[str, float]] = {}

    def charge(self, provider: str, model: str, tier: str, usage: Usage) -> float:
        """Bill one finished request and return its price (0.0 for a model without a price)."""
        cost = self._prices.cost_usd(provider, model, tier, usage) or 0.0
        with self._lock:
            self._usd += cost
            self._requests += 1
            bucket = self._by_tier.setdefault(tier, {"usd": 0.0, "requests": 0})
            bucket["usd"] += cost
            bucket["requests"] += 1
        return cost

    def snapshot(self) -> dict[str, Any]:
        """Totals so far: USD, requests billed, and both per tier."""
        with self._lock:
            return {
                "usd": round(self._usd, 9),
                "requests_billed": self._requests,
                "by_tier": {
                    tier: {"usd": round(b["usd"], 9), "requests": int(b["requests"])}
                    for tier, b in sorted(self._by_tier.items())
                },
            }


class EmulatorState:
    """Everything one running emulator knows; provider stores hang off it."""

    def __init__(self, config: EmulatorConfig | None = None, spool_dir: Path | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.clock = VirtualClock(self.config.time_scale)
        self.billing = Billing(default_price_table())
        self._owns_spool = spool_dir is None
        self.spool_dir = spool_dir or Path(tempfile.mkdtemp(prefix="tokentier-emulator-"))
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.calls: Counter[str] = Counter()
        self._stores: dict[str, ProviderStore] = {}
        self._id_counter = itertools.count()
        self._draw_counter = itertools.count()

    # -- configuration -------------------------------------------------------------------------
    def configure(self, changes: dict[str, Any]) -> None:
        """Apply setting ``changes``; a new ``time_scale`` takes effect without a jump in virtual time."""
        self.config.update(changes)
        if "time_scale" in changes:
            self.clock.set_time_scale(self.config.time_scale)

    # -- deterministic randomness --------------------------------------------------------------
    def unit(self, *parts: object) -> float:
        """A uniform number in [0, 1) fixed by the seed and ``parts``: same inputs, same draw."""
        digest = hashlib.blake2b(
            "\x1f".join(map(str, (self.config.seed, *parts))).encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big") / 2**64

    def next_draw(self, *parts: object) -> float:
        """A seeded draw from a sequence (for per-call faults such as poll errors)."""
        return self.unit("draw", next(self._draw_counter), *parts)

    def new_id(self, prefix: str, length: int = 24) -> str:
        """A provider-looking id that is the same for the same seed and call order."""
        n = next(self._id_counter)
        digest = hashlib.blake2b(f"{self.config.seed}:{prefix}:{n}".encode(), digest_size=16).hexdigest()
        return f"{prefix}{digest[:length]}"

    # -- stores --------------------------------------------------------------------------------
    def register_store(self, name: str, store: ProviderStore) -> None:
        """Make ``store`` reachable by reset and the admin endpoints under ``name``."""
        self._stores[name] = store

    def store_summaries(self) -> dict[str, list[dict[str, Any]]]:
        """Every registered store's summary, by store name."""
        return {name: store.summary() for name, store in self._stores.items()}

    def reset(self) -> None:
        """Forget every batch, file, charge and call count; keep the settings."""
        for store in self._stores.values():
            store.reset()
        self.billing.reset()
        self.calls.clear()
        self._id_counter = itertools.count()
        self._draw_counter = itertools.count()
        for child in self.spool_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def close(self) -> None:
        """Delete the spool directory if this state created it."""
        if self._owns_spool:
            shutil.rmtree(self.spool_dir, ignore_errors=True)
