"""Chain planning: how long chained batch stages take end to end, and whether they meet a deadline.

Pipelining batch stages serializes their latency: two chained one-hour batches take two hours at
least, with a long tail. Given the batch stages of a DAG (each with its batch turnaround p50/p95
-- from history, else the router's defaults) and which stage runs before which, this module finds
the chains, adds up their expected finish, checks them against the known deadlines and sums the
cost on each tier. Everything here is pure: no Airflow and no SDK imports (the DAG walk lives in
:mod:`airflow_provider_tokentier.runtime.dag_stages`).

Times are seconds from the moment the chain starts (its first submission); a chain's stage ``k``
is submitted when stage ``k-1`` ends, so its finish is the sum of the turnarounds before it plus
its own. Summing p95s is deliberately pessimistic (tails rarely all line up); it is the number a
hard deadline must survive, and the p50 sum is the typical case.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Collection, Iterable, Mapping, Sequence

from airflow_provider_tokentier.core.pricing import format_usd
from airflow_provider_tokentier.core.routing import format_duration

__all__ = [
    "MAX_CHAINS",
    "BatchStage",
    "ChainPlan",
    "Deadline",
    "StagePlan",
    "find_chains",
    "longest_chain",
    "plan_chain",
    "remaining_chain_message",
    "render_plan",
]

#: Enumerating every maximal chain is exponential in the worst case; real DAGs have a handful.
MAX_CHAINS = 1000

_COST_TIERS = ("standard", "flex", "batch")


def parse_iso(value: str) -> datetime.datetime:
    """Parse an ISO 8601 datetime; naive values are taken as UTC."""
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"deadline {value!r} is not an ISO 8601 datetime") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Deadline:
    """When a stage's results are due.

    ``kind`` is ``"absolute"`` (``at``: unix seconds), ``"after_submission"`` (``after_s``: seconds
    from the stage's own submission, e.g. a sensor's ``timedelta`` deadline) or ``"unknown"``
    (templated or computed at run time; ``note`` says from where). ``source`` names the task.
    """

    kind: str
    source: str = ""
    at: float | None = None
    after_s: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("absolute", "after_submission", "unknown"):
            raise ValueError(f"unknown deadline kind {self.kind!r}")
        if self.kind == "absolute" and self.at is None:
            raise ValueError("an absolute deadline needs `at`")
        if self.kind == "after_submission" and (self.after_s is None or self.after_s < 0):
            raise ValueError("an after_submission deadline needs a non-negative `after_s`")

    @property
    def known(self) -> bool:
        """Whether the deadline is known before the run (not templated or computed)."""
        return self.kind != "unknown"

    def limit_s(self, chain_start: float | None, stage_start_s: float) -> float | None:
        """The latest finish, in seconds from the chain start, for a stage submitted at ``stage_start_s``."""
        if self.kind == "after_submission":
            assert self.after_s is not None
            return stage_start_s + self.after_s
        if self.kind == "absolute" and chain_start is not None:
            assert self.at is not None
            return self.at - chain_start
        return None

    def describe(self) -> str:
        """The deadline in words, for the rendered plan."""
        if self.kind == "absolute":
            assert self.at is not None
            stamp = datetime.datetime.fromtimestamp(self.at, datetime.timezone.utc)
            return f"{stamp.strftime('%Y-%m-%d %H:%M UTC')} ({self.source})"
        if self.kind == "after_submission":
            assert self.after_s is not None
            return f"{format_duration(self.after_s)} after submission ({self.source})"
        return f"unknown/templated ({self.source}{': ' + self.note if self.note else ''})"


@dataclasses.dataclass(frozen=True)
class BatchStage:
    """One batch stage: a submit + its sensor, or a batch-bound ``TieredInferenceOperator``.

    ``key`` identifies the stage (its label, e.g. ``"submit_judge -> judge_ready"``);
    ``p50_s``/``p95_s`` are its batch turnaround, ``turnaround_source`` where they come from.
    ``costs`` maps tier -> USD for the whole stage (``flex``: ``None`` when not offered); ``None``
    when the request count is not knowable before the run (``cost_note`` says why).
    """

    key: str
    provider: str
    model: str | None
    p50_s: float
    p95_s: float
    turnaround_source: str = "defaults"
    tasks: tuple[str, ...] = ()
    deadline: Deadline | None = None
    rescue_tier: str | None = None
    requests: int | None = None
    costs: Mapping[str, float | None] | None = None
    cost_note: str = ""

    def __post_init__(self) -> None:
        if not (0 <= self.p50_s <= self.p95_s):
            raise ValueError(f"stage {self.key!r}: need 0 <= p50 <= p95, got {self.p50_s} and {self.p95_s}")

    @property
    def label(self) -> str:
        """``provider/model`` of the stage, for the rendered plan."""
        return f"{self.provider}/{self.model or '(model from rows)'}"


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """A stage placed in its chain: seconds from the chain start."""

    stage: BatchStage
    start_p50_s: float
    start_p95_s: float
    finish_p50_s: float
    finish_p95_s: float
    limit_p50_s: float | None = None  # latest allowed finish when the chain runs at p50 (None: unknown)
    limit_p95_s: float | None = None

    @property
    def fits_p50(self) -> bool | None:
        """Whether the stage finishes by its limit at p50 (``None``: no limit)."""
        return None if self.limit_p50_s is None else self.finish_p50_s <= self.limit_p50_s

    @property
    def fits_p95(self) -> bool | None:
        """Whether the stage finishes by its limit at p95 (``None``: no limit)."""
        return None if self.limit_p95_s is None else self.finish_p95_s <= self.limit_p95_s


@dataclasses.dataclass(frozen=True)
class ChainPlan:
    """A chain of batch stages with cumulative finish times, deadline checks and costs."""

    stages: tuple[StagePlan, ...]
    chain_start: float | None = None

    @property
    def total_p50_s(self) -> float:
        """Seconds from the chain start until the last stage finishes, at p50."""
        return self.stages[-1].finish_p50_s if self.stages else 0.0

    @property
    def total_p95_s(self) -> float:
        """Seconds from the chain start until the last stage finishes, at p95."""
        return self.stages[-1].finish_p95_s if self.stages else 0.0

    @property
    def deadlines(self) -> list[Deadline]:
        """The stages' deadlines, in chain order."""
        return [s.stage.deadline for s in self.stages if s.stage.deadline is not None]

    @property
    def has_known_deadline(self) -> bool:
        """Whether any stage has a deadline known before the run."""
        return any(s.limit_p95_s is not None for s in self.stages)

    @property
    def fits_p50(self) -> bool | None:
        """Every known deadline met at p50 (``None`` when no deadline is known)."""
        checks = [s.fits_p50 for s in self.stages if s.fits_p50 is not None]
        return all(checks) if checks else None

    @property
    def fits_p95(self) -> bool | None:
        """Every known deadline met at p95 (``None`` when no deadline is known)."""
        checks = [s.fits_p95 for s in self.stages if s.fits_p95 is not None]
        return all(checks) if checks else None

    def total_costs(self) -> dict[str, float | None] | None:
        """USD per tier summed over the stages; ``None`` unless every stage's cost is known."""
        if not self.stages or any(s.stage.costs is None for s in self.stages):
            return None
        totals: dict[str, float | None] = {}
        for tier in _COST_TIERS:
            values = [(s.stage.costs or {}).get(tier) for s in self.stages]
            totals[tier] = None if any(v is None for v in values) else round(sum(v or 0.0 for v in values), 9)
        return totals

    def verdict(self) -> str:
        """One sentence: does the chain meet its deadline(s)?"""
        if not self.stages:
            return "no batch stages"
        fits50, fits95 = self.fits_p50, self.fits_p95
        if fits95 is None:
            return "unknown: no static deadline to check against (pass --deadline to check one)"
        if fits95:
            total = format_duration(self.total_p95_s)
            return f"yes: the chain finishes within its deadline even at p95 ({total})"
        late = _worst_overrun(self.stages)
        rescued = [s.stage for s in self.stages if s.fits_p95 is False and s.stage.rescue_tier]
        tail = (
            "the tail relies on the deadline rescue ("
            + ", ".join(f"{s.key} -> {s.rescue_tier}" for s in rescued)
            + ")"
            if rescued
            else "no rescue tier is set, so what has not finished is cut at the deadline"
        )
        if fits50:
            return (
                f"at p50 only: typically done in {format_duration(self.total_p50_s)}, but at p95 the "
                f"chain runs {format_duration(late)} past a deadline; {tail}"
            )
        return f"no: even at p50 the chain misses a deadline by {format_duration(late)}; {tail}"


def _worst_overrun(stages: Sequence[StagePlan]) -> float:
    return max(
        (s.finish_p95_s - s.limit_p95_s for s in stages if s.limit_p95_s is not None),
        default=0.0,
    )


# -- the graph ---------------------------------------------------------------------------------
def _closure(keys: Collection[str], before: Mapping[str, Collection[str]]) -> dict[str, set[str]]:
    """Stage -> every stage that runs before it (transitively)."""
    closure: dict[str, set[str]] = {}

    def visit(key: str, trail: tuple[str, ...]) -> set[str]:
        if key in closure:
            return closure[key]
        if key in trail:
            raise ValueError(f"batch stages form a cycle: {' -> '.join((*trail, key))}")
        found: set[str] = set()
        for prior in before.get(key, ()):
            if prior not in keys:
                raise ValueError(f"stage {key!r} runs after unknown stage {prior!r}")
            found.add(prior)
            found |= visit(prior, (*trail, key))
        closure[key] = found
        return found

    for key in keys:
        visit(key, ())
    return closure


def find_chains(keys: Sequence[str], before: Mapping[str, Collection[str]]) -> list[tuple[str, ...]]:
    """Every maximal chain of stages, in run order.

    ``before[b]`` holds stages that run before ``b`` (directly or transitively: the relation is
    closed and then reduced, so either works). Two stages chain when one is upstream of the
    other; a stage with no batch stage before or after it is a chain of one. Chains come in the
    order of ``keys`` of their first stage; at most :data:`MAX_CHAINS`.
    """
    closure = _closure(keys, before)
    # Transitive reduction: a -> b directly when nothing between them is a batch stage.
    nexts: dict[str, list[str]] = {k: [] for k in keys}
    for b in keys:
        for a in closure[b]:
            if not any(a in closure[c] for c in closure[b] if c != a):
                nexts[a].append(b)
    order = {k: i for i, k in enumerate(keys)}
    for a in nexts:
        nexts[a].sort(key=order.__getitem__)
    chains: list[tuple[str, ...]] = []

    def walk(path: tuple[str, ...]) -> None:
        if len(chains) >= MAX_CHAINS:
            return
        following = nexts[path[-1]]
        if not following:
            chains.append(path)
        for b in following:
            walk((*path, b))

    for key in keys:
        if not closure[key]:
            walk((key,))
    return chains


def longest_chain(
    chains: Iterable[Sequence[str]], stages: Mapping[str, BatchStage]
) -> tuple[str, ...] | None:
    """The chain with the largest cumulative p95 (then the most stages, then the first found)."""
    best: tuple[str, ...] | None = None
    best_rank: tuple[float, int] = (-1.0, 0)
    for chain in chains:
        rank = (sum(stages[k].p95_s for k in chain), len(chain))
        if rank > best_rank:
            best, best_rank = tuple(chain), rank
    return best


def plan_chain(
    stages: Sequence[BatchStage],
    *,
    chain_start: float | None = None,
    deadline: Deadline | None = None,
) -> ChainPlan:
    """Place ``stages`` (in run order) one after the other and check their deadlines.

    ``chain_start`` (unix seconds) anchors absolute deadlines; without it only deadlines counted
    from a stage's submission can be checked. ``deadline`` overrides the last stage's deadline
    when that one is not static (e.g. ``tokentier plan --deadline``).
    """
    placed: list[StagePlan] = []
    start50 = start95 = 0.0
    for index, stage in enumerate(stages):
        if (
            deadline is not None
            and index == len(stages) - 1
            and not (stage.deadline and stage.deadline.known)
        ):
            stage = dataclasses.replace(stage, deadline=deadline)
        finish50, finish95 = start50 + stage.p50_s, start95 + stage.p95_s
        limit50 = limit95 = None
        if stage.deadline is not None:
            limit50 = stage.deadline.limit_s(chain_start, start50)
            limit95 = stage.deadline.limit_s(chain_start, start95)
        placed.append(StagePlan(stage, start50, start95, finish50, finish95, limit50, limit95))
        start50, start95 = finish50, finish95
    return ChainPlan(tuple(placed), chain_start)


def remaining_chain_message(
    stages: Sequence[BatchStage], deadline_at: float | None, now: float
) -> str | None:
    """A warning when ``stages`` cannot all finish by ``deadline_at`` at p95.

    ``stages`` is this stage first, then the batch stages after it, counted from ``now``;
    ``None`` when they can, or when there is no deadline.
    """
    if deadline_at is None or not stages:
        return None
    needed = sum(s.p95_s for s in stages)
    left = deadline_at - now
    if needed <= left:
        return None
    first, rest = stages[0], stages[1:]
    chain = f"this stage and {len(rest)} downstream batch stage{'s' if len(rest) != 1 else ''} (" + (
        ", ".join(s.key for s in rest) + ")"
    )
    what = chain if rest else "this batch stage"
    deadline = datetime.datetime.fromtimestamp(deadline_at, datetime.timezone.utc)
    room = f"only {format_duration(left)} remain" if left > 0 else "the deadline has already passed"
    detail = "; ".join(f"{s.key}: p95 {format_duration(s.p95_s)} ({s.turnaround_source})" for s in stages)
    rescue = (
        f" The rescue tier ({first.rescue_tier}) will move unfinished requests before the deadline."
        if first.rescue_tier
        else " No rescue tier is set: unfinished requests are cut at the deadline."
    )
    return (
        f"The remaining batch chain cannot meet the deadline at p95: {what} need "
        f"{format_duration(needed)} at p95 (p50 {format_duration(sum(s.p50_s for s in stages))}), but "
        f"{room} until {deadline.strftime('%Y-%m-%d %H:%M UTC')}. [{detail}]{rescue}"
    )


# -- rendering ---------------------------------------------------------------------------------
def _at(plan: ChainPlan, seconds: float) -> str:
    text = f"+{format_duration(seconds)}" if seconds else "+0s"
    if plan.chain_start is None:
        return text
    stamp = datetime.datetime.fromtimestamp(plan.chain_start + seconds, datetime.timezone.utc)
    return f"{text} ({stamp.strftime('%m-%d %H:%M')})"


def render_plan(
    plan: ChainPlan,
    *,
    title: str,
    chains: Sequence[Sequence[str]] = (),
    notes: Sequence[str] = (),
) -> str:
    """The readable report ``tokentier plan`` prints for the longest chain."""
    lines = [f"tokentier plan: {title}"]
    if not plan.stages:
        lines.append(
            "  no batch stages found (BatchSubmitOperator/BatchSensor pairs or batch-bound "
            "TieredInferenceOperator tasks)"
        )
        lines.extend(f"  note: {n}" for n in notes)
        return "\n".join(lines)
    count = len(plan.stages)
    stage_total = len({k for chain in chains for k in chain}) or count
    lines.append(
        f"  {stage_total} batch stage{'s' if stage_total != 1 else ''} in {len(chains) or 1} "
        f"chain{'s' if len(chains) > 1 else ''}; longest: {count} chained stage{'s' if count != 1 else ''}"
    )
    if plan.chain_start is not None:
        start = datetime.datetime.fromtimestamp(plan.chain_start, datetime.timezone.utc)
        lines.append(f"  start      {start.strftime('%Y-%m-%d %H:%M UTC')} (finish times count from here)")
    lines.append("")
    key_w = max(len("stage"), *(len(s.stage.key) for s in plan.stages)) + 2
    label_w = max(len("provider/model"), *(len(s.stage.label) for s in plan.stages)) + 2
    at_w = max(len("finish p50"), *(len(_at(plan, s.finish_p50_s)) for s in plan.stages)) + 2
    lines.append(
        f"  {'#':<3}{'stage':<{key_w}}{'provider/model':<{label_w}}{'stage p50/p95':<16}"
        f"{'finish p50':<{at_w}}finish p95"
    )
    for i, step in enumerate(plan.stages, 1):
        s = step.stage
        durations = f"{format_duration(s.p50_s)} / {format_duration(s.p95_s)}"
        lines.append(
            f"  {i:<3}{s.key:<{key_w}}{s.label:<{label_w}}{durations:<16}"
            f"{_at(plan, step.finish_p50_s):<{at_w}}{_at(plan, step.finish_p95_s)}"
        )
    lines.append(
        f"  {'':<3}{'total':<{key_w}}{'':<{label_w}}{'':<16}"
        f"{_at(plan, plan.total_p50_s):<{at_w}}{_at(plan, plan.total_p95_s)}"
    )
    lines.append("")
    if count > 1:
        lines.append("  chained stages serialize: each is submitted when the one before it lands")
    lines.append("  turnaround")
    lines.extend(f"    {step.stage.key}: {step.stage.turnaround_source}" for step in plan.stages)
    lines.extend(_render_deadlines(plan))
    lines.append(f"  fits       {plan.verdict()}")
    rescues = [f"{s.stage.key} -> {s.stage.rescue_tier}" for s in plan.stages if s.stage.rescue_tier]
    lines.append("  rescue     " + (", ".join(rescues) if rescues else "none (no rescue_tier set)"))
    lines.append("")
    lines.extend(_render_costs(plan, key_w))
    if notes:
        lines.append("")
        lines.extend(f"  note: {n}" for n in notes)
    return "\n".join(lines)


def _render_deadlines(plan: ChainPlan) -> list[str]:
    deadlines = [s.stage.deadline for s in plan.stages]
    known = [d for d in deadlines if d is not None and d.known]
    unknown = [d for d in deadlines if d is not None and not d.known]
    lines = [f"  deadline   {d.describe()}" for d in known]
    if unknown:
        notes = sorted({d.note for d in unknown if d.note})
        where = ", ".join(d.source for d in unknown)
        lines.append(
            f"  deadline   {'also ' if known else ''}unknown/templated on {where}"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
    if not known and not unknown:
        lines.append("  deadline   none set on these stages")
    for step in plan.stages:
        if step.limit_p95_s is None:
            continue
        slack = step.limit_p95_s - step.finish_p95_s
        lines.append(
            f"             {step.stage.key}: due {_at(plan, step.limit_p95_s)}; at p95 "
            + (f"{format_duration(slack)} to spare" if slack >= 0 else f"{format_duration(-slack)} late")
        )
    return lines


def _render_costs(plan: ChainPlan, key_w: int) -> list[str]:
    rows: list[tuple[str, str]] = []
    for step in plan.stages:
        s = step.stage
        if s.costs is None:
            rows.append((s.key, "unknown: " + (s.cost_note or "request count not knowable before the run")))
            continue
        name = f"{s.key} ({s.requests:,} req)" if s.requests is not None else s.key
        rows.append(
            (name, "".join(f"{format_usd(s.costs.get(tier), unknown='-'):>12}" for tier in _COST_TIERS))
        )
    totals = plan.total_costs()
    if totals is None:
        rows.append(("chain", "unknown until every stage's request count is known"))
    else:
        rows.append(
            ("chain", "".join(f"{format_usd(totals.get(tier), unknown='-'):>12}" for tier in _COST_TIERS))
        )
    width = max(key_w, *(len(name) + 2 for name, _ in rows))
    lines = [f"  cost  {'':<{width - 4}}" + "".join(f"{tier:>12}" for tier in _COST_TIERS)]
    lines.extend(f"    {name:<{width}}{cells}" for name, cells in rows)
    return lines
