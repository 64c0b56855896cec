"""Run the four benchmarks and print ours beside the anchors, with ratios and targets.

    uv run --locked --all-groups python -m bench            # everything (about 8 minutes)
    uv run --locked --all-groups python -m bench --only submit --only landing
    uv run --locked --all-groups python -m bench --quick    # small sizes: a smoke run, not figures

Raw figures also go to ``$TOKENTIER_BENCH_DIR/tokentier-bench/results.json`` (default under /tmp).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from typing import Any

from bench import common, landing, submit, triggers, ui_workloads

#: Targets from the batch-core issue, for this 2-core machine.
TRIGGER_MAX_LAG_MS = 100.0
TRIGGER_CPU_MS_PER_POLL = 1.5
SUBMIT_RSS_MB = 150.0
SUBMIT_CPU_RATIO = 1 / 3
LANDING_ROWS_PER_S = 50_000.0
LANDING_RSS_MB = 50.0
#: "Flat": the growth at the largest N exceeds the growth at the smallest N by less than this.
LANDING_FLAT_MB = 5.0


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def trigger_report(rows: list[dict[str, Any]]) -> list[str]:
    by = {r["contender"]: r for r in rows}
    lines = []
    for ours, anchor in (("ours-anthropic", "official-anthropic"), ("ours-openai", "official-openai")):
        if ours not in by:
            continue
        r = by[ours]
        cpu, lag = r.get("cpu_ms_per_poll"), r.get("max_lag_ms")
        lines.append(
            f"- {r['label']}: max lag {lag:.0f} ms (target <= {TRIGGER_MAX_LAG_MS:.0f}: "
            f"{_verdict(lag is not None and lag <= TRIGGER_MAX_LAG_MS)}), start-up max lag "
            f"{r['startup_max_lag_ms']:.0f} ms; CPU/poll {cpu:.2f} ms (target <= {TRIGGER_CPU_MS_PER_POLL}: "
            f"{_verdict(cpu is not None and cpu <= TRIGGER_CPU_MS_PER_POLL)})"
        )
        if anchor in by:
            a = by[anchor]
            cpu_ratio = common.ratio(cpu, a.get("cpu_ms_per_poll"))
            lines.append(
                f"  vs {a['label']} ({a['waits']} waits): CPU/poll {a['cpu_ms_per_poll']:.2f} ms "
                f"(ours/anchor = {cpu_ratio:.2f}), max lag {a['max_lag_ms']:.0f} ms, "
                f"polls/s {r['polls_per_s']:.0f} vs {a['polls_per_s']:.0f}"
            )
    return lines


def submit_report(rows: list[dict[str, Any]]) -> list[str]:
    by = {r["contender"]: r for r in rows}
    lines = []
    for provider in ("anthropic", "openai"):
        ours, anchor = by.get(f"ours-{provider}"), by.get(f"commonai-{provider}")
        if ours is None:
            continue
        line = (
            f"- {provider}: ours peak RSS growth {ours['rss_growth_mb']:.0f} MB (target <= "
            f"{SUBMIT_RSS_MB:.0f}: {_verdict(ours['rss_growth_mb'] <= SUBMIT_RSS_MB)}), "
            f"CPU {ours['cpu_s']:.2f} s"
        )
        if anchor is not None:
            cpu_ratio = ours["cpu_s"] / anchor["cpu_s"]
            line += (
                f"; common.ai {anchor['rss_growth_mb']:.0f} MB, CPU {anchor['cpu_s']:.2f} s -> "
                f"RSS ours/anchor = {ours['rss_growth_mb'] / anchor['rss_growth_mb']:.2f}, "
                f"CPU ours/anchor = {cpu_ratio:.2f} "
                f"(target <= 0.33: {_verdict(cpu_ratio <= SUBMIT_CPU_RATIO)})"
            )
        lines.append(line)
    return lines


def landing_report(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    anchors = {(r["provider"], r["n"]): r for r in rows if r["contender"] == "commonai"}
    ours_rows = [r for r in rows if r["contender"] == "ours"]
    for r in ours_rows:
        line = (
            f"- {r['provider']} N={r['n']:,}: ours {r['rows_per_s']:,.0f} rows/s (target >= 50,000: "
            f"{_verdict(r['rows_per_s'] >= LANDING_ROWS_PER_S)}; "
            f"{r['n'] / r['cpu_s']:,.0f} rows per CPU-second), "
            f"peak RSS growth {r['rss_growth_mb']:.0f} MB (target <= {LANDING_RSS_MB:.0f}: "
            f"{_verdict(r['rss_growth_mb'] <= LANDING_RSS_MB)})"
        )
        anchor = anchors.get((r["provider"], r["n"]))
        if anchor is not None:
            line += (
                f"; common.ai {anchor['rows_per_s']:,.0f} rows/s, {anchor['rss_growth_mb']:.0f} MB -> "
                f"rows/s ours/anchor = {r['rows_per_s'] / anchor['rows_per_s']:.2f}, CPU ours/anchor = "
                f"{r['cpu_s'] / anchor['cpu_s']:.2f}"
            )
        lines.append(line)
    for provider in ("anthropic", "openai"):
        sweep = sorted((r for r in ours_rows if r["provider"] == provider), key=lambda r: r["n"])
        if len(sweep) >= 2:
            low, high = sweep[0], sweep[-1]
            delta = high["rss_growth_mb"] - low["rss_growth_mb"]
            lines.append(
                f"- {provider} RSS flatness: {low['rss_growth_mb']:.0f} MB at {low['n']:,} -> "
                f"{high['rss_growth_mb']:.0f} MB at {high['n']:,} (+{delta:.1f} MB; flat = under "
                f"+{LANDING_FLAT_MB:.0f} MB: {_verdict(delta < LANDING_FLAT_MB)})"
            )
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", action="append", choices=["triggers", "submit", "landing", "ui"])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run only")
    args = parser.parse_args(argv)
    only = args.only or ["triggers", "submit", "landing", "ui"]
    info = common.machine_info()
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"# tokentier benchmarks, {started:%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}; Python {info['python']}; "
        f"load average before: {info['load_before']}"
    )
    print(
        "versions: "
        + ", ".join(f"{k} {v}" for k, v in info.items() if k.startswith(("apache", "anthropic", "openai")))
    )
    results: dict[str, Any] = {"started": started.isoformat(), "machine": info, "quick": args.quick}
    clock = time.perf_counter()

    if "triggers" in only:
        print("\n## 1. Concurrent batch waits on one event loop", flush=True)
        kwargs: dict[str, Any] = {}
        if args.quick:
            kwargs = {"waits": 100, "openai_anchor_waits": 5, "window": 5.0, "max_warmup": 20.0}
        rows = triggers.run(**kwargs)
        results["triggers"] = rows
        print(common.format_table(rows, triggers.COLUMNS))
        print("\n".join(trigger_report(rows)), flush=True)

    if "submit" in only:
        print("\n## 2. Submitting 50,000 requests of ~2 KB", flush=True)
        rows = submit.run(requests=2_000 if args.quick else 50_000)
        results["submit"] = rows
        print(common.format_table(rows, submit.COLUMNS))
        print("\n".join(submit_report(rows)), flush=True)

    if "landing" in only:
        print("\n## 3. Landing finished results", flush=True)
        cases = None
        if args.quick:
            cases = [(c, p, n // 20) for c, p, n in landing.DEFAULT_CASES]
        rows = landing.run(cases)
        results["landing"] = rows
        print(common.format_table(rows, landing.COLUMNS))
        print("\n".join(landing_report(rows)), flush=True)

    if "ui" in only:
        print("\n## 4. The LLM workloads page over 10,000 task instances", flush=True)
        rows = ui_workloads.run(tis=1_000 if args.quick else 10_000, repeat=5 if args.quick else 20)
        results["ui"] = rows
        print(common.format_table(rows, ui_workloads.COLUMNS), flush=True)

    results["elapsed_s"] = time.perf_counter() - clock
    results["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out = common.WORK_ROOT / "results.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print(
        f"\nelapsed {results['elapsed_s']:.0f} s; load average after: {results['load_after']}; "
        f"raw figures: {out}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
