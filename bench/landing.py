"""Benchmark 3: landing N finished results (N = 25k, 50k, 100k) as one JSONL row per request.

Set-up (not measured, one child per case): the contender submits N tiny requests through its
own operator (so the batch has the custom_ids and state it expects), and the emulator -- with a
fast virtual clock -- finishes the batch and writes its results file.

Measured (a fresh child per case): the contender's own "batch has ended" entry point, from the
call to its return, with nothing else in the process:

* ours: ``BatchSensor(submission=manifest).execute`` -- one status call per batch, then
  harvest (stream the results, one row per request) and land (``results.jsonl``);
* anchor: common.ai's ``LLMBatchOperator.execute_complete(event)`` -- what it runs when its
  trigger fires: stream the results, validate, write one JSONL row per request, build the manifest.

Figures: rows/s (N / wall seconds), CPU seconds, peak RSS growth (kernel high-water mark).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import common

ANTHROPIC_MODEL = "claude-haiku-4-5"
OPENAI_MODEL = "gpt-6-luna"

CONTENDERS = {
    "ours": "tokentier BatchSensor (harvest + land)",
    "commonai": "common.ai LLMBatchOperator.execute_complete",
}

#: (contender, provider, N) cases, in run order. common.ai's OpenAI adapter caps a batch at
#: 50,000 requests, so the OpenAI comparison runs at 50k.
DEFAULT_CASES = [
    ("ours", "anthropic", 25_000),
    ("ours", "anthropic", 50_000),
    ("ours", "anthropic", 100_000),
    ("commonai", "anthropic", 25_000),
    ("commonai", "anthropic", 50_000),
    ("commonai", "anthropic", 100_000),
    ("ours", "openai", 50_000),
    ("commonai", "openai", 50_000),
]


def tiny_requests(path: Path, provider: str, count: int) -> None:
    with path.open("w") as out:
        for i in range(count):
            messages = [{"role": "user", "content": f"say {i}"}]
            if provider == "anthropic":
                row: dict[str, Any] = {
                    "custom_id": f"r{i:06d}",
                    "params": {"model": ANTHROPIC_MODEL, "max_tokens": 16, "messages": messages},
                }
            else:
                row = {
                    "custom_id": f"r{i:06d}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": OPENAI_MODEL, "max_completion_tokens": 16, "messages": messages},
                }
            out.write(json.dumps(row, separators=(",", ":")) + "\n")


# -- parent ----------------------------------------------------------------------------------------
def run(cases: list[tuple[str, str, int]] | None = None) -> list[dict[str, Any]]:
    cases = cases or DEFAULT_CASES
    rows: list[dict[str, Any]] = []
    # Batches take a few virtual minutes; each set-up moves the virtual clock an hour ahead
    # once it has submitted (a fast clock would end a big batch while it is still being created).
    emulator = common.start_emulator(latency_ms=0, time_scale=1.0, batch_turnaround_s=300.0)
    try:
        env = common.connection_env(emulator.base_url)
        configs: dict[tuple[str, str, int], dict[str, Any]] = {}
        for contender, provider, count in cases:
            label = f"{contender}-{provider}-{count}"
            case_dir = common.work_dir("landing") / label
            shutil.rmtree(case_dir, ignore_errors=True)
            case_dir.mkdir(parents=True)
            inputs = case_dir / "requests.jsonl"
            tiny_requests(inputs, provider, count)
            configs[(contender, provider, count)] = {
                "contender": contender,
                "provider": provider,
                "count": count,
                "dir": str(case_dir),
                "input": str(inputs),
                "env": env,
                "emulator": emulator.base_url,
                "label": label,
            }
        # One set-up child per contender and provider prepares all of its sizes.
        setups: dict[tuple[str, str, int], dict[str, Any]] = {}
        for contender, provider in dict.fromkeys((c, p) for c, p, _n in cases):
            group = [cfg for key, cfg in configs.items() if key[:2] == (contender, provider)]
            print(f"  landing: set-up {contender}/{provider} ...", file=sys.stderr, flush=True)
            done = common.run_child(
                "bench.landing",
                {"phase": "setup", "contender": contender, "env": env, "cases": group},
                label=f"{contender}-{provider}-setup",
                timeout=900,
            )
            for cfg, setup in zip(group, done["setups"], strict=True):
                setups[(contender, provider, cfg["count"])] = setup
        for key, config in configs.items():
            contender, provider, count = key
            print(
                f"  landing: {CONTENDERS[contender]}, {provider}, N={count:,} ...",
                file=sys.stderr,
                flush=True,
            )
            result = common.run_child(
                "bench.landing",
                {**config, "phase": "land", "setup": setups[key]},
                label=config["label"],
                timeout=600,
            )
            result.update(contender=contender, label=CONTENDERS[contender], provider=provider, n=count)
            rows.append(result)
            shutil.rmtree(config["dir"], ignore_errors=True)
    finally:
        emulator.stop()
    return rows


# -- child: set-up ---------------------------------------------------------------------------------
def _deferred_type() -> type[BaseException]:
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # pragma: no cover
        from airflow.exceptions import TaskDeferred
    return TaskDeferred


def _setup_ours(config: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_tokentier.backends import batch_backend
    from airflow_provider_tokentier.hooks.base import provider_hook
    from airflow_provider_tokentier.operators.batch import BatchSubmitOperator

    provider = config["provider"]
    conn_id = "tt_anthropic" if provider == "anthropic" else "tt_openai"
    state_root = os.path.join(config["dir"], "state")
    manifest = BatchSubmitOperator(
        task_id="submit",
        provider=provider,
        requests_uri="file://" + config["input"],
        conn_id=conn_id,
        state_root=state_root,
    ).execute(common.fake_context("bench_landing", "submit"))
    _advance_clock(config)
    backend = batch_backend(provider, provider_hook(provider, conn_id).get_client())
    for batch in manifest["batches"]:
        _wait_until(lambda b=batch: backend.retrieve(b["id"]).ended)
    return {"manifest": manifest, "state_root": state_root, "conn_id": conn_id}


def _setup_commonai(config: dict[str, Any]) -> dict[str, Any]:
    from airflow.providers.common.ai.batch import dispatch
    from airflow.providers.common.ai.batch.polling import terminal_event
    from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator

    provider = config["provider"]
    model = ANTHROPIC_MODEL if provider == "anthropic" else OPENAI_MODEL
    prompts = [f"say {i}" for i in range(config["count"])]
    operator = LLMBatchOperator(
        task_id="land",
        requests=prompts,
        result_path="file://" + os.path.join(config["dir"], "results"),
        llm_conn_id=f"commonai_{provider}",
        model_id=f"{provider}:{model}",
        max_tokens=16,
        deferrable=True,
    )
    try:
        operator.execute(common.fake_context("bench_landing", "land"))
    except _deferred_type() as deferred:
        batch_id = deferred.trigger.batch_id
    else:
        raise RuntimeError("LLMBatchOperator did not defer")
    _advance_clock(config)
    adapter = dispatch.build_adapter(provider, llm_conn_id=f"commonai_{provider}")
    _wait_until(lambda: adapter.get_batch(batch_id).status != "in_progress")
    event = terminal_event(batch_id, adapter.get_batch(batch_id))
    adapter.close()
    return {"event": event, "model_id": f"{provider}:{model}"}


def _advance_clock(config: dict[str, Any]) -> None:
    import httpx

    httpx.post(config["emulator"] + "/_emulator/clock/advance", json={"seconds": 3600}).raise_for_status()


def _wait_until(ready: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError("the emulator batch did not end in time")
        time.sleep(0.2)


# -- child: landing --------------------------------------------------------------------------------
def warm_process() -> None:
    """One-time process costs before the clock, for every contender alike (see bench.submit)."""
    import anthropic  # noqa: F401
    import openai  # noqa: F401
    from airflow.sdk.lineage import get_hook_lineage_collector

    get_hook_lineage_collector()
    common.import_first_call_modules()


def _land_ours(config: dict[str, Any]) -> tuple[Any, Path]:
    # Operators first: importing sensors.batch first hits a circular import (waiting ->
    # operators.flex -> operators/__init__ -> tiered -> waiting) at the time of writing.
    import airflow_provider_tokentier.operators  # noqa: F401
    from airflow_provider_tokentier.sensors.batch import BatchSensor

    setup = config["setup"]
    sensor = BatchSensor(
        task_id="gate",
        submission=setup["manifest"],
        conn_id=setup["conn_id"],
        state_root=setup["state_root"],
        fail_on_partial=False,
    )
    context = common.fake_context("bench_landing", "gate")

    def call() -> dict[str, Any]:
        try:
            manifest: dict[str, Any] = sensor.execute(context)
        except _deferred_type():
            raise RuntimeError("BatchSensor deferred: the batches had not ended") from None
        return manifest

    return call, Path(config["dir"]) / "state"


def _land_commonai(config: dict[str, Any]) -> tuple[Any, Path]:
    from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator

    setup = config["setup"]
    provider = config["provider"]
    operator = LLMBatchOperator(
        task_id="land",
        requests=["unused on resume"],
        result_path="file://" + os.path.join(config["dir"], "results"),
        llm_conn_id=f"commonai_{provider}",
        model_id=setup["model_id"],
        max_tokens=16,
        deferrable=True,
    )
    context = common.fake_context("bench_landing", "land")

    def call() -> dict[str, Any]:
        manifest: dict[str, Any] = operator.execute_complete(context, setup["event"])
        return manifest

    return call, Path(config["dir"]) / "results"


def _landed_rows(manifest: dict[str, Any]) -> tuple[int, str]:
    uri = manifest.get("results_uri") or manifest.get("result_uri") or ""
    path = uri.removeprefix("file://")
    with open(path, "rb") as handle:
        return sum(1 for _ in handle), path


def child(config: dict[str, Any]) -> None:
    os.environ.update(config["env"])
    import airflow  # noqa: F401  (Airflow's logging and config, as in a worker)

    ours = config["contender"] == "ours"
    if config["phase"] == "setup":
        setup = _setup_ours if ours else _setup_commonai
        common.write_result(config, {"setups": [setup(case) for case in config["cases"]]})
        return
    warm_process()
    call, _where = (_land_ours if ours else _land_commonai)(config)
    with common.PeakRSS() as rss, common.cpu_and_wall() as usage:
        manifest, first_imported = common.measured_call(
            call, f"landing-{config['contender']}-{config['count']}"
        )
    rows, path = _landed_rows(manifest)
    common.write_result(
        config,
        {
            "rows": rows,
            "expected_rows": config["count"],
            "rows_per_s": config["count"] / usage["wall_s"],
            "cpu_s": usage["cpu_s"],
            "wall_s": usage["wall_s"],
            "rss_growth_mb": rss.growth_mb,
            "rss_baseline_mb": rss.baseline_mb,
            "output_mb": os.path.getsize(path) / 2**20,
            "counts": manifest.get("counts"),
            "modules_imported_in_call": first_imported,
        },
    )


# -- CLI -------------------------------------------------------------------------------------------
COLUMNS = [
    ("label", "contender"),
    ("provider", "provider"),
    ("n", "N"),
    ("rows_per_s", "rows/s"),
    ("cpu_s", "CPU s"),
    ("wall_s", "wall s"),
    ("rss_growth_mb", "peak RSS growth MB"),
    ("output_mb", "JSONL MB"),
]


def main(argv: list[str]) -> None:
    config = common.child_config(argv)
    if config is not None:
        child(config)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.landing", description=__doc__)
    parser.add_argument(
        "--case",
        action="append",
        metavar="CONTENDER:PROVIDER:N",
        help="e.g. ours:anthropic:100000 (repeatable; default: the full set)",
    )
    args = parser.parse_args(argv)
    cases = None
    if args.case:
        cases = [(c, p, int(n)) for c, p, n in (item.split(":") for item in args.case)]
    rows = run(cases)
    print(common.format_table(rows, COLUMNS))
    print(json.dumps(rows, indent=1, default=str), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
