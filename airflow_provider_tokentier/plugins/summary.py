"""Totals, turnaround percentiles and the small SVG chart of the workloads page (pure functions).

Input is the summary statement's tuples (`records.summary_rows`): ``(dag_id, start day,
provider, model, phase, cost_usd, standard_cost_usd, savings_usd, started_at, updated_at)``.
Spend counts landed records only: a workload is billed for the results it landed, and the
submit task of a submit/sensor pair never lands, so nothing is counted twice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from typing import Any

from airflow_provider_tokentier.core.log_format import duration


@dataclass
class Totals:
    """Workloads, landed workloads, spend and savings of a group (a day, a DAG, everything)."""

    workloads: int = 0
    landed: int = 0
    cost_usd: float = 0.0
    standard_cost_usd: float = 0.0
    savings_usd: float = 0.0

    def add(self, landed: bool, cost: float | None, standard: float | None, savings: float | None) -> None:
        """Count one workload; its money only if it landed."""
        self.workloads += 1
        if landed:
            self.landed += 1
            self.cost_usd += cost or 0.0
            self.standard_cost_usd += standard or 0.0
            self.savings_usd += savings if savings is not None else (standard or 0.0) - (cost or 0.0)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, money rounded to a millionth of a dollar (as the task logs print it)."""
        return {
            "workloads": self.workloads,
            "landed": self.landed,
            "cost_usd": round(self.cost_usd, 6),
            "standard_cost_usd": round(self.standard_cost_usd, 6),
            "savings_usd": round(self.savings_usd, 6),
        }


@dataclass
class Turnaround:
    """Batch turnaround (submit to landing) percentiles of one provider/model."""

    provider: str
    model: str
    count: int
    p50_s: float
    p95_s: float


@dataclass
class Summary:
    """Everything above the rows on the workloads page."""

    overall: Totals = field(default_factory=Totals)
    by_day: dict[str, Totals] = field(default_factory=dict)
    by_dag: dict[str, Totals] = field(default_factory=dict)
    turnaround: list[Turnaround] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON twin's ``summary``."""
        return {
            "overall": self.overall.as_dict(),
            "by_day": {k: v.as_dict() for k, v in self.by_day.items()},
            "by_dag": {k: v.as_dict() for k, v in self.by_dag.items()},
            "turnaround": [t.__dict__ for t in self.turnaround],
        }


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 timestamp from a record, or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def turnaround_seconds(started_at: Any, updated_at: Any) -> float | None:
    """Seconds from the first submission to landing, if both ends are known."""
    start, end = parse_time(started_at), parse_time(updated_at)
    if start is None or end is None or (start.tzinfo is None) != (end.tzinfo is None):
        return None
    return max(0.0, (end - start).total_seconds())


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _day(started_at: Any, start_day: str | None) -> str:
    """The UTC day a workload was first submitted (its task's start day if the record has none)."""
    if isinstance(started_at, str) and started_at.endswith(("+00:00", "Z")):
        return started_at[:10]
    submitted = parse_time(started_at)
    if submitted is not None and submitted.utcoffset() is not None:
        return submitted.astimezone(timezone.utc).date().isoformat()
    return start_day or "not started"


def summarize(rows: Iterable[Sequence[Any]]) -> Summary:
    """Totals per day and per DAG, and turnaround p50/p95 per provider/model."""
    summary = Summary()
    by_day: dict[str, Totals] = defaultdict(Totals)
    by_dag: dict[str, Totals] = defaultdict(Totals)
    turnarounds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for dag_id, start_day, provider, model, phase, cost, standard, savings, started, updated in rows:
        landed = phase == "landed"
        day = _day(started, start_day)
        for totals in (summary.overall, by_day[day], by_dag[dag_id]):
            totals.add(landed, cost, standard, savings)
        if landed and (seconds := turnaround_seconds(started, updated)) is not None:
            turnarounds[(provider or "?", model or "?")].append(seconds)
    summary.by_day = dict(sorted(by_day.items(), reverse=True))
    summary.by_dag = dict(sorted(by_dag.items()))
    for (provider, model), values in sorted(turnarounds.items()):
        values.sort()
        summary.turnaround.append(
            Turnaround(provider, model, len(values), percentile(values, 50), percentile(values, 95))
        )
    return summary


def turnaround_svg(turnarounds: Sequence[Turnaround], width: int = 720) -> str:
    """A horizontal bar chart, one row per provider/model: p50 solid, p95 light behind it."""
    if not turnarounds:
        return ""
    label_w, value_w, row_h, bar_h = 240, 170, 26, 14
    scale_max = max(t.p95_s for t in turnarounds) or 1.0
    plot_w = width - label_w - value_w
    height = row_h * len(turnarounds) + 8
    parts = [
        f'<svg class="tt-chart" role="img" aria-label="batch turnaround p50 and p95" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, t in enumerate(turnarounds):
        y = 4 + i * row_h
        p95_w = max(1.0, plot_w * t.p95_s / scale_max)
        p50_w = max(1.0, plot_w * t.p50_s / scale_max)
        label = escape(f"{t.provider} / {t.model} (n={t.count})")
        parts.append(
            f'<text x="0" y="{y + bar_h - 2}" font-size="12" fill="currentColor">{label}</text>'
            f'<rect x="{label_w}" y="{y}" width="{p95_w:.1f}" height="{bar_h}" fill="#93c5fd">'
            f"<title>p95 {duration(t.p95_s)}</title></rect>"
            f'<rect x="{label_w}" y="{y}" width="{p50_w:.1f}" height="{bar_h}" fill="#1d4ed8">'
            f"<title>p50 {duration(t.p50_s)}</title></rect>"
            f'<text x="{label_w + plot_w + 8}" y="{y + bar_h - 2}" font-size="12" fill="currentColor">'
            f"p50 {duration(t.p50_s)} · p95 {duration(t.p95_s)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
