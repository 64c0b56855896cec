"""Benchmark 2: submitting 50,000 requests of ~2 KB each.

The requests are generated once into a JSONL file (provider-native rows). Each contender runs
its operator's ``execute`` in a fresh process, against the emulator (no latency), and is
measured from the call to its return (ours) or to its deferral (common.ai):

* ours: ``BatchSubmitOperator(requests_uri=<the JSONL file>)`` -- validates, chunks, writes the
  state and submits, streaming the file;
* anchor: common.ai's ``LLMBatchOperator(requests=[...], deferrable=True)`` -- validates,
  records state, submits, then defers. Its API takes the requests as a list, so the list is
  built from the same file *before* the clock and the RSS baseline (it is not counted against it).

Figures: peak RSS growth over the call (kernel high-water mark, reset at the start), CPU seconds
(all threads) and wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

from bench import common

ANTHROPIC_MODEL = "claude-haiku-4-5"
OPENAI_MODEL = "gpt-6-luna"
MAX_TOKENS = 256

CONTENDERS = {
    "ours-anthropic": ("tokentier BatchSubmitOperator (anthropic)", "anthropic"),
    "commonai-anthropic": ("common.ai LLMBatchOperator (anthropic)", "anthropic"),
    "ours-openai": ("tokentier BatchSubmitOperator (openai)", "openai"),
    "commonai-openai": ("common.ai LLMBatchOperator (openai)", "openai"),
}

_WORDS = [
    "batch",
    "tier",
    "token",
    "window",
    "deadline",
    "harvest",
    "result",
    "request",
    "model",
    "cheap",
    "latency",
    "queue",
    "summary",
    "document",
    "nightly",
    "refresh",
    "provider",
    "airflow",
    "trigger",
    "sensor",
    "manifest",
    "ledger",
    "expiry",
    "chunk",
    "stream",
]


def _prompt(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def generate_inputs(count: int, prompt_bytes: int) -> dict[str, Path]:
    """Provider-native JSONL files of ``count`` requests (~2 KB each), made once per size."""
    folder = common.work_dir(f"inputs-{count}-{prompt_bytes}")
    paths = {"anthropic": folder / "anthropic.jsonl", "openai": folder / "openai.jsonl"}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = random.Random(42)
    with paths["anthropic"].open("w") as ant, paths["openai"].open("w") as oai:
        for i in range(count):
            text = _prompt(rng, prompt_bytes)
            messages = [{"role": "user", "content": text}]
            ant.write(
                json.dumps(
                    {
                        "custom_id": f"doc-{i:06d}",
                        "params": {"model": ANTHROPIC_MODEL, "max_tokens": MAX_TOKENS, "messages": messages},
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )
            oai.write(
                json.dumps(
                    {
                        "custom_id": f"doc-{i:06d}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {
                            "model": OPENAI_MODEL,
                            "max_completion_tokens": MAX_TOKENS,
                            "messages": messages,
                        },
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )
    return paths


# -- parent ----------------------------------------------------------------------------------------
def run(
    *, requests: int = 50_000, prompt_bytes: int = 1900, contenders: list[str] | None = None
) -> list[dict[str, Any]]:
    contenders = contenders or list(CONTENDERS)
    paths = generate_inputs(requests, prompt_bytes)
    rows: list[dict[str, Any]] = []
    emulator = common.start_emulator(latency_ms=0, time_scale=1.0, batch_turnaround_s=1e6)
    try:
        env = common.connection_env(emulator.base_url)
        for name in contenders:
            label, provider = CONTENDERS[name]
            state = common.work_dir("submit-state") / name
            shutil.rmtree(state, ignore_errors=True)
            state.mkdir(parents=True)
            config = {
                "contender": name,
                "provider": provider,
                "input": str(paths[provider]),
                "state": str(state),
                "env": env,
            }
            print(f"  submit: {label}, {requests:,} requests ...", file=sys.stderr, flush=True)
            result = common.run_child("bench.submit", config, label=name, timeout=600)
            result.update(
                label=label,
                requests=requests,
                input_mb=paths[provider].stat().st_size / 2**20,
            )
            rows.append(result)
            shutil.rmtree(state, ignore_errors=True)
        # Cross-check: the emulator holds the submitted requests.
        held = emulator.batches()
        for row in rows:
            provider = CONTENDERS[row["contender"]][1]
            ids = set(row["batch_ids"])
            row["emulator_requests"] = sum(
                int(b.get("request_count") or 0) for b in held.get(provider, []) if b.get("id") in ids
            )
    finally:
        emulator.stop()
    return rows


# -- child -----------------------------------------------------------------------------------------
def warm_process(contender: str) -> float:
    """Pay one-time process costs before the clock, for every contender alike; return seconds.

    Imports (the SDKs included: common.ai imports them lazily inside ``execute``; and the modules
    both import on their first request, `common.import_first_call_modules`) and Airflow's
    hook-lineage collector, which loads every installed plugin on the first ObjectStoragePath
    ``open()`` -- about a second here, because common.ai's plugins import FastAPI.
    """
    import time

    started = time.perf_counter()
    import anthropic  # noqa: F401
    import openai  # noqa: F401
    from airflow.sdk.lineage import get_hook_lineage_collector

    get_hook_lineage_collector()
    common.import_first_call_modules()
    if contender.startswith("ours-"):
        import airflow_provider_tokentier.operators.batch  # noqa: F401
    else:
        import airflow.providers.common.ai.batch.anthropic
        import airflow.providers.common.ai.batch.openai
        import airflow.providers.common.ai.operators.llm_batch  # noqa: F401
    return time.perf_counter() - started


def _ours(config: dict[str, Any]) -> tuple[Any, Any]:
    from airflow_provider_tokentier.operators.batch import BatchSubmitOperator

    provider = config["provider"]
    operator = BatchSubmitOperator(
        task_id="submit",
        provider=provider,
        requests_uri="file://" + config["input"],
        conn_id="tt_anthropic" if provider == "anthropic" else "tt_openai",
        state_root=config["state"],
    )
    context = common.fake_context("bench_submit", "submit")

    def call() -> list[str]:
        manifest = operator.execute(context)
        return [b["id"] for b in manifest["batches"]]

    return call, None


def _commonai(config: dict[str, Any]) -> tuple[Any, Any]:
    from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator

    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # pragma: no cover
        from airflow.exceptions import TaskDeferred

    provider = config["provider"]
    # Its API takes a list: build it from the same file before the clock (not counted).
    requests: list[dict[str, Any]] = []
    with open(config["input"], "rb") as handle:
        for line in handle:
            row = json.loads(line)
            payload = row["params"] if provider == "anthropic" else row["body"]
            requests.append({"prompt": payload["messages"][0]["content"]})
    model = ANTHROPIC_MODEL if provider == "anthropic" else OPENAI_MODEL
    operator = LLMBatchOperator(
        task_id="submit",
        requests=requests,
        result_path="file://" + config["state"],
        llm_conn_id=f"commonai_{provider}",
        model_id=f"{provider}:{model}",
        max_tokens=MAX_TOKENS,
        deferrable=True,
    )
    context = common.fake_context("bench_submit", "submit")

    def call() -> list[str]:
        try:
            operator.execute(context)
        except TaskDeferred as deferred:
            return [deferred.trigger.batch_id]
        raise RuntimeError("LLMBatchOperator returned without deferring")

    return call, requests


def child(config: dict[str, Any]) -> None:
    os.environ.update(config["env"])
    import airflow  # noqa: F401  (Airflow's logging and config, as in a worker)

    warm_s = warm_process(config["contender"])
    before_input = common.rss_mb()
    call, keep = (_ours if config["contender"].startswith("ours-") else _commonai)(config)
    input_mb = common.rss_mb() - before_input
    with common.PeakRSS() as rss, common.cpu_and_wall() as usage:
        batch_ids, first_imported = common.measured_call(call, f"submit-{config['contender']}")
    del keep
    common.write_result(
        config,
        {
            "contender": config["contender"],
            "warm_s": warm_s,
            "batch_ids": batch_ids,
            "batches": len(batch_ids),
            "rss_growth_mb": rss.growth_mb,
            "rss_baseline_mb": rss.baseline_mb,
            "input_list_mb": input_mb,
            "cpu_s": usage["cpu_s"],
            "wall_s": usage["wall_s"],
            "modules_imported_in_call": first_imported,
        },
    )


# -- CLI -------------------------------------------------------------------------------------------
COLUMNS = [
    ("label", "contender"),
    ("requests", "requests"),
    ("batches", "batches"),
    ("rss_growth_mb", "peak RSS growth MB"),
    ("cpu_s", "CPU s"),
    ("wall_s", "wall s"),
    ("input_list_mb", "preloaded input list MB (not counted)"),
]


def main(argv: list[str]) -> None:
    config = common.child_config(argv)
    if config is not None:
        child(config)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.submit", description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--prompt-bytes", type=int, default=1900)
    parser.add_argument("--contenders", nargs="*", choices=list(CONTENDERS))
    args = parser.parse_args(argv)
    rows = run(requests=args.requests, prompt_bytes=args.prompt_bytes, contenders=args.contenders)
    print(common.format_table(rows, COLUMNS))
    print(json.dumps(rows, indent=1, default=str), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
