r"""The ``tokentier`` command line.

``tokentier route`` describes a workload and prints the router's decision: the tier, the cost
on every tier, the expected finish and the reasons::

    tokentier route --provider anthropic --model claude-haiku-5-5 --requests 5000 \
        --input-tokens 4000 --output-tokens 500 --budget 8h
    tokentier route --example nightly-doc-refresh
    tokentier route --example background-evals --json

``tokentier plan`` walks a DAG (a file or a dag id), finds its chains of batch stages and prints,
for the longest, the expected p50/p95 finish per stage and cumulative, the deadline, whether the
chain fits, and the cost on each tier::

    tokentier plan dags_examples/overnight_eval.py --deadline 8h

Subcommands are registered in :data:`SUBCOMMANDS`; each has an ``add_arguments(parser)`` and a
``run(args, out) -> int``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from airflow_provider_tokentier.core.pricing import format_usd
from airflow_provider_tokentier.core.routing import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MIN_BATCH_SAVINGS_USD,
    TIERS,
    TierDecision,
    TurnaroundHistory,
    WorkloadProfile,
    choose_tier,
    format_duration,
    parse_duration,
)
from airflow_provider_tokentier.runtime.settings import resolve_price_table

#: Seed workloads for ``tokentier route --example NAME``: flag name -> value, as if typed.
EXAMPLES: Mapping[str, Mapping[str, Any]] = {
    # The nightly refresh of dags_examples/nightly_doc_refresh.py: nobody reads the summaries
    # before the morning, 8 hours after the 01:00 run.
    "nightly-doc-refresh": {
        "description": "nightly refresh of 5,000 doc summaries, read in the morning",
        "provider": "anthropic",
        "model": "claude-haiku-5-5",
        "requests": 5000,
        "input_tokens": 4000,
        "output_tokens": 500,
        "budget": "8h",
    },
    # The same job on 50 docs, same budget: only the volume differs, and the saving is too small.
    "one-off-summary": {
        "description": "one-off summary of 50 docs, same model and budget as the nightly refresh",
        "provider": "anthropic",
        "model": "claude-haiku-5-5",
        "requests": 50,
        "input_tokens": 4000,
        "output_tokens": 500,
        "budget": "8h",
    },
    # One turn of a coding agent: a developer waits on it; the long prompt is mostly cached.
    "interactive-coding": {
        "description": "one coding-agent turn a developer waits on, prompt 90% cached",
        "provider": "anthropic",
        "model": "claude-opus-5-5",
        "requests": 1,
        "input_tokens": 30000,
        "output_tokens": 2000,
        "cached_ratio": 0.9,
        "interactive": True,
        "budget": "2m",
    },
    # A weekly eval suite: generate answers, then an LLM judge grades them (2 chained batch
    # stages); results are looked at within two days.
    "background-evals": {
        "description": "20,000-case eval suite, generate then judge (2 batch stages), due in 2 days",
        "provider": "openai",
        "model": "gpt-6.1-sol",
        "requests": 20000,
        "input_tokens": 1500,
        "output_tokens": 300,
        "stages": 2,
        "budget": "2d",
    },
}


# -- route ---------------------------------------------------------------------------------------
def _add_route_arguments(parser: argparse.ArgumentParser) -> None:
    workload = parser.add_argument_group("workload (flags override an --example preset)")
    workload.add_argument("--example", choices=sorted(EXAMPLES), help="start from a seed workload")
    workload.add_argument("--provider", choices=["anthropic", "openai"])
    workload.add_argument("--model")
    workload.add_argument("--requests", type=int, help="number of requests")
    workload.add_argument("--input-tokens", type=int, help="input tokens per request")
    workload.add_argument("--output-tokens", type=int, help="output tokens per request")
    workload.add_argument("--budget", help="latency budget: 500ms, 90s, 15m, 8h, 2d")
    workload.add_argument("--deadline", help="absolute deadline, ISO 8601 with a timezone")
    workload.add_argument(
        "--interactive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a human or an agent loop waits on the output",
    )
    workload.add_argument("--cached-ratio", type=float, help="share of input tokens cached (0..1)")
    workload.add_argument("--stages", type=int, help="chained batch stages up to the consumer (>= 1)")
    workload.add_argument("--expected-spend", type=float, help="expected spend on standard, USD")
    workload.add_argument(
        "--min-savings",
        type=float,
        help=f"batch crossover: minimum saving in USD (default {DEFAULT_MIN_BATCH_SAVINGS_USD:.2f})",
    )
    workload.add_argument(
        "--flex",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the model offers flex (default: known list)",
    )
    workload.add_argument(
        "--concurrency", type=int, help=f"synchronous requests in flight (default {DEFAULT_CONCURRENCY})"
    )
    router = parser.add_argument_group("router")
    router.add_argument("--force-tier", help=f"skip the rules: one of {', '.join(TIERS)}")
    router.add_argument("--rescue-margin", help="rescue margin (default: estimated), e.g. 45m")
    router.add_argument(
        "--history-root", help="state root holding _history/ (e.g. s3://bucket/tokentier or a local dir)"
    )
    router.add_argument("--prices", help="price overrides: a JSON file path or inline JSON")
    router.add_argument(
        "--no-config",
        action="store_true",
        help="ignore Airflow's [tokentier] prices (faster start: Airflow is not imported)",
    )
    router.add_argument("--now", help="decide as of this ISO 8601 time (reproducible output)")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")


def _aware(text: str, flag: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{flag} must be an ISO 8601 time, got {text!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"{flag} must carry a timezone (e.g. {text}+00:00 or Z)")
    return value


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = dict(EXAMPLES[args.example]) if args.example else {}
    for name in (
        "provider",
        "model",
        "requests",
        "input_tokens",
        "output_tokens",
        "budget",
        "deadline",
        "interactive",
        "cached_ratio",
        "stages",
        "expected_spend",
        "min_savings",
        "flex",
        "concurrency",
    ):
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    missing = [
        f"--{name.replace('_', '-')}"
        for name in ("provider", "model", "requests", "input_tokens", "output_tokens")
        if settings.get(name) is None
    ]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (or use --example NAME)")
    return settings


def _profile(settings: Mapping[str, Any]) -> WorkloadProfile:
    budget = settings.get("budget")
    deadline = settings.get("deadline")
    return WorkloadProfile(
        provider=settings["provider"],
        model=settings["model"],
        request_count=settings["requests"],
        input_tokens_per_request=settings["input_tokens"],
        output_tokens_per_request=settings["output_tokens"],
        latency_budget_s=None if budget is None else parse_duration(budget),
        deadline=None if deadline is None else _aware(deadline, "--deadline"),
        interactive=bool(settings.get("interactive", False)),
        cached_input_ratio=settings.get("cached_ratio", 0.0),
        chained_batch_stages=settings.get("stages", 1),
        expected_spend_usd=settings.get("expected_spend"),
        min_batch_savings_usd=settings.get("min_savings", DEFAULT_MIN_BATCH_SAVINGS_USD),
        flex_capable=settings.get("flex"),
        concurrency=settings.get("concurrency", DEFAULT_CONCURRENCY),
    )


def _history(args: argparse.Namespace, profile: WorkloadProfile) -> TurnaroundHistory | None:
    if not args.history_root:
        return None
    from airflow_provider_tokentier.state.history import TurnaroundStore
    from airflow_provider_tokentier.state.ledger import resolve_state_root

    return TurnaroundStore(resolve_state_root(args.history_root)).load(profile.provider, profile.model)


def _when(at: datetime.datetime, now: datetime.datetime) -> str:
    stamp = at.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{stamp} (+{format_duration((at - now).total_seconds())})"


def render(decision: TierDecision, profile: WorkloadProfile, title: str | None = None) -> str:
    """The readable report ``tokentier route`` prints."""
    now = decision.decided_at
    lines = [f"tokentier route: {title}" if title else "tokentier route"]
    lines.append(
        f"  workload   {profile.provider}/{profile.model}: {profile.request_count:,} "
        f"request{'s' if profile.request_count != 1 else ''} x "
        f"({profile.input_tokens_per_request:,} in + {profile.output_tokens_per_request:,} out tokens)"
    )
    extras = []
    if profile.cached_input_ratio:
        extras.append(f"{profile.cached_input_ratio:.0%} of input cached")
    if profile.chained_batch_stages > 1:
        extras.append(f"{profile.chained_batch_stages} chained batch stages")
    if profile.interactive:
        extras.append("interactive")
    if extras:
        lines.append(f"             {', '.join(extras)}")
    if decision.budget_s is not None:
        until = now + datetime.timedelta(seconds=decision.budget_s)
        lines.append(
            f"  budget     {format_duration(decision.budget_s)} (until {_when(until, now).split(' (')[0]})"
        )
    else:
        lines.append("  budget     none (interactive)")
    saving = decision.savings_usd
    verdict = decision.tier.upper() + (" (forced)" if decision.forced else "")
    if decision.tier != "standard" and saving is not None:
        verdict += f", saves {format_usd(saving)} against standard"
    lines.append(f"  decision   {verdict}")
    lines.append("")
    lines.append(f"    {'tier':<10}{'est. cost':>12}   {'finish p50':<34}{'finish p95'}")
    for tier in ("standard", "flex", "batch"):
        mark = ">" if tier == decision.tier else " "
        window = decision.expected_finish_by_tier.get(tier)
        if window is None:
            lines.append(f"  {mark} {tier:<10}{'-':>12}   not offered for this model")
            continue
        cost = format_usd(decision.estimated_cost_usd.get(tier))
        lines.append(f"  {mark} {tier:<10}{cost:>12}   {_when(window[0], now):<34}{_when(window[1], now)}")
    lines.append("")
    lines.append("  reasons")
    lines.extend(f"  - {reason}" for reason in decision.reasons)
    return "\n".join(lines)


def _run_route(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(args)
    profile = _profile(settings)
    now = _aware(args.now, "--now") if args.now else None
    prices = resolve_price_table(args.prices, use_config=not args.no_config)
    decision = choose_tier(
        profile,
        history=_history(args, profile),
        prices=prices,
        now=now,
        rescue_margin_s=None if args.rescue_margin is None else parse_duration(args.rescue_margin),
        force_tier=args.force_tier,
    )
    if args.json:
        out.write(json.dumps(decision.to_dict(), indent=2) + "\n")
    else:
        title = args.example and f"{args.example} -- {settings['description']}"
        out.write(render(decision, profile, title or None) + "\n")
    return 0


# -- plan ----------------------------------------------------------------------------------------
def _add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", help="a DAG file (imported directly) or a dag id (looked up in the dags folder)"
    )
    parser.add_argument("--dag-id", help="which DAG, when the file defines several")
    parser.add_argument("--dags-folder", help="where to look a dag id up (default: [core] dags_folder)")
    parser.add_argument(
        "--history-root", help="state root holding _history/ (default: each stage's state_root, else config)"
    )
    parser.add_argument(
        "--deadline",
        help="check the chain against this deadline when the DAG's is not static: ISO 8601 time, "
        "or a duration from the chain start (8h)",
    )
    parser.add_argument("--start", help="when the chain starts, ISO 8601 (default: now)")
    parser.add_argument(
        "--requests",
        action="append",
        default=[],
        metavar="[TASK=]N",
        help="request count for stages whose rows exist only at run time: N for every stage, or "
        "TASK=N for the stage holding that task (repeatable)",
    )
    parser.add_argument("--input-tokens", type=int, help="input tokens per request with --requests (1000)")
    parser.add_argument("--output-tokens", type=int, help="output tokens per request with --requests (300)")
    parser.add_argument("--prices", help="price overrides: a JSON file path or inline JSON")


def _request_counts(values: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            count = int(number)
        except ValueError:
            raise ValueError(f"--requests takes N or TASK=N, got {value!r}") from None
        if count < 1:
            raise ValueError(f"--requests must be at least 1, got {value!r}")
        counts[name or "*"] = count
    return counts


def _run_plan(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_provider_tokentier.core.chain_plan import Deadline, render_plan
    from airflow_provider_tokentier.runtime.dag_stages import (
        DEFAULT_INPUT_TOKENS,
        DEFAULT_OUTPUT_TOKENS,
        load_dag,
        plan_dag,
    )

    start = _aware(args.start, "--start") if args.start else datetime.datetime.now(datetime.timezone.utc)
    deadline = None
    if args.deadline:
        try:
            seconds = parse_duration(args.deadline)
        except ValueError:
            at = _aware(args.deadline, "--deadline").timestamp()
            deadline = Deadline("absolute", "--deadline", at=at)
        else:
            deadline = Deadline("absolute", "--deadline", at=start.timestamp() + seconds)
    dag = load_dag(args.target, dag_id=args.dag_id, dags_folder=args.dags_folder)
    plan, chains, found = plan_dag(
        dag,
        chain_start=start.timestamp(),
        deadline=deadline,
        history_root=args.history_root,
        request_counts=_request_counts(args.requests),
        input_tokens=args.input_tokens or DEFAULT_INPUT_TOKENS,
        output_tokens=args.output_tokens or DEFAULT_OUTPUT_TOKENS,
        prices=resolve_price_table(args.prices),
    )
    notes = list(found.notes)
    if args.requests and not any(s.costs is None for s in found.stages.values()):
        notes.append(
            f"costs of stages sized with --requests assume {args.input_tokens or DEFAULT_INPUT_TOKENS:,} "
            f"input + {args.output_tokens or DEFAULT_OUTPUT_TOKENS:,} output tokens per request"
        )
    title = f"{dag.dag_id} ({args.target})" if args.target != dag.dag_id else dag.dag_id
    out.write(render_plan(plan, title=title, chains=chains, notes=notes) + "\n")
    return 0


# -- entry point ---------------------------------------------------------------------------------
Runner = Callable[[argparse.Namespace, TextIO], int]

#: name -> (help, add_arguments, run). A later ``plan`` subcommand registers here.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Runner]] = {
    "route": ("print the router's tier decision for a described workload", _add_route_arguments, _run_route),
    "plan": (
        "find a DAG's chained batch stages and check the longest chain against its deadline",
        _add_plan_arguments,
        _run_plan,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``tokentier`` parser with every subcommand in :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="tokentier",
        description="Route LLM workloads to the cheapest tier whose turnaround they tolerate.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, run) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run ``tokentier``; returns the exit code (2 for bad input, with the reason on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args, out or sys.stdout)
    except ValueError as exc:
        print(f"tokentier {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
