"""How tokentier writes its task logs: progress lines, one folded group per round, one summary block.

One formatter for every place that reports a workload -- the sensor, the operators, the
trigger and ``make demo`` -- so a person reading any of them sees the same words. Airflow 3's
log view folds the lines between ``::group::<title>`` and ``::endgroup::``. Pure: no Airflow.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from airflow_provider_tokentier.core.pricing import format_usd
from airflow_provider_tokentier.core.result_rows import RESULT_STATUSES

GROUP_END = "::endgroup::"

#: Per-batch counts the progress line reports, in this order (``processing`` last: what is left).
PROGRESS_COUNTS = (*RESULT_STATUSES, "processing")


def group_start(title: str) -> str:
    """The marker opening a folded block titled ``title``."""
    return f"::group::{title}"


def round_title(round_: int, max_rounds: int | None, what: str) -> str:
    """The title of a round's group, e.g. ``Round 2/3: 12 requests re-batched into 1 batch``."""
    of = f"/{max_rounds}" if max_rounds else ""
    return f"Round {round_ + 1}{of}: {what}"


def usd(value: float | None) -> str:
    """``$0.012345``, or ``unknown`` when a model has no price (`format_usd` to 6 places)."""
    return format_usd(value, places=6)


def duration(seconds: float | None) -> str:
    """A short human duration: ``45s``, ``12m05s``, ``3h07m``, ``1d02h``."""
    if seconds is None:
        return "?"
    whole = max(0, round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def clock(iso_time: str | None) -> str:
    """``2026-11-29 05:10 UTC`` from an ISO 8601 time (``?`` when unknown)."""
    if not iso_time:
        return "?"
    try:
        parsed = datetime.datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    except ValueError:
        return iso_time
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.timezone.utc)
    return parsed.strftime("%Y-%m-%d %H:%M UTC")


def counts_text(counts: Mapping[str, int], keys: tuple[str, ...] = PROGRESS_COUNTS) -> str:
    """``succeeded=90 errored=2 ... processing=8``; keys not in ``keys`` follow, sorted."""
    ordered = [k for k in keys if k in counts] + sorted(k for k in counts if k not in keys)
    return " ".join(f"{k}={int(counts[k])}" for k in ordered)


def batch_progress_line(
    *,
    provider: str,
    round_: int | None,
    max_rounds: int | None,
    batches_ended: int,
    batches_total: int,
    counts: Mapping[str, int],
    elapsed_s: float | None,
    expected_finish: Mapping[str, str] | None,
    cost_so_far_usd: float | None,
) -> str:
    """The line a batch wait logs every ``progress_every``.

    Round, batches ended / total, request counts per outcome, time since submission, the
    expected finish from the provider/model's turnaround history (p50/p95), and the cost of
    what has landed so far.
    """
    where = "" if round_ is None else round_title(round_, max_rounds, "").rstrip(": ") + " | "
    finish = (
        f"expected finish p50 {clock(expected_finish.get('p50'))}, p95 {clock(expected_finish.get('p95'))}"
        if expected_finish
        else "expected finish unknown"
    )
    return (
        f"{where}{provider}: {batches_ended}/{batches_total} batches ended | {counts_text(counts)} | "
        f"elapsed {duration(elapsed_s)} | {finish} | cost so far {usd(cost_so_far_usd)}"
    )


def sync_progress_line(
    *,
    provider: str,
    tier: str,
    done: int,
    total: int | None,
    counts: Mapping[str, int],
    tiers: Mapping[str, int],
    elapsed_s: float,
    cost_so_far_usd: float | None,
) -> str:
    """The line a flex/standard run logs every ``progress_every`` rows, with a rate-based finish."""
    of = f"/{total}" if total is not None else ""
    eta = ""
    if total and done and elapsed_s > 0:
        eta = f" | expected finish in {duration(elapsed_s / done * max(0, total - done))}"
    used = " ".join(f"{k}={v}" for k, v in tiers.items() if v)
    return (
        f"{provider} {tier}: {done}{of} rows done | {counts_text({k: v for k, v in counts.items() if v})} | "
        f"tiers {used or '-'} | elapsed {duration(elapsed_s)}{eta} | cost so far {usd(cost_so_far_usd)}"
    )


def summary_lines(manifest: Mapping[str, Any]) -> list[str]:
    """The summary block of a landed workload, from its results manifest (one string per line)."""
    counts = manifest.get("counts") or {}
    tiers = {k: v for k, v in (manifest.get("tiers") or {}).items() if v}
    cost, standard = manifest.get("cost_usd"), manifest.get("standard_cost_usd")
    saved = manifest.get("savings_usd")
    share = f" ({saved / standard:.0%} of standard)" if saved is not None and standard else ""
    where = " / ".join(str(x) for x in (manifest.get("provider"), manifest.get("model")) if x)
    total = manifest.get("total", sum(counts.values()))
    lines = [
        f"tokentier summary{f' ({where})' if where else ''}",
        f"  requests:         {total} -> {counts_text(counts, RESULT_STATUSES)}",
        f"  rounds:           {manifest.get('rounds', 1)}",
        f"  tiers:            {' '.join(f'{k}={v}' for k, v in tiers.items()) or '-'}",
        f"  cost:             {usd(cost)}",
        f"  cost at standard: {usd(standard)}",
        f"  savings:          {usd(saved)}{share}",
        f"  results:          {manifest.get('results_uri')}",
    ]
    decision = manifest.get("decision")
    if isinstance(decision, Mapping) and decision.get("tier"):
        lines.insert(4, f"  router chose:     {decision['tier']}")
    return lines
