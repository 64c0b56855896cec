"""Benchmark 1: many concurrent batch waits on ONE event loop.

Each contender runs in a fresh process with one asyncio loop holding ``waits`` trigger instances
(one batch each, same ``poll_interval``) against the emulator at 200 ms latency, plus a ticker
task that sleeps 10 ms and records how late it wakes up (event-loop lag). After a warm-up, a
fixed window measures:

* max event-loop lag (ms) during the window (and, separately, during start-up);
* CPU per poll: the process's CPU time (all threads) / status polls the emulator received.

Contenders: our ``BatchTrigger`` (Anthropic and OpenAI), the official Anthropic provider's
``AnthropicBatchTrigger`` and the official OpenAI provider's ``OpenAIBatchTrigger``. The
latter calls the blocking SDK on the event loop, so it runs with fewer waits (``--openai-anchor-waits``).
Every batch stays ``in_progress`` for the whole run (huge turnaround, time_scale 1).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import os
import sys
import time
from typing import Any

from bench import common

POLL_PATHS = {"anthropic": "GET /v1/messages/batches/{id}", "openai": "GET /v1/batches/{id}"}

#: contender -> (label, provider)
CONTENDERS = {
    "ours-anthropic": ("tokentier BatchTrigger (anthropic)", "anthropic"),
    "official-anthropic": ("official AnthropicBatchTrigger", "anthropic"),
    "ours-openai": ("tokentier BatchTrigger (openai)", "openai"),
    "official-openai": ("official OpenAIBatchTrigger", "openai"),
    # Diagnostic (not in the default set): the shared async client is built once before the
    # waits start, i.e. what every wait would use if client creation were race-free.
    "ours-anthropic-prebuilt": ("tokentier BatchTrigger (anthropic), client pre-built", "anthropic"),
}
DEFAULT_CONTENDERS = ["ours-anthropic", "official-anthropic", "ours-openai", "official-openai"]


# -- parent ----------------------------------------------------------------------------------------
def create_batches(emulator: Any, provider: str, count: int) -> list[str]:
    """``count`` one-request batches, created through the official SDKs before the clock starts."""
    if provider == "anthropic":
        import anthropic

        client = anthropic.Anthropic(base_url=emulator.base_url, api_key=common.API_KEY)
        request = {
            "custom_id": "r0",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "hello"}],
            },
        }
        ids = [client.messages.batches.create(requests=[request]).id for _ in range(count)]  # type: ignore[list-item]
        client.close()
        return ids
    import openai

    oclient = openai.OpenAI(base_url=emulator.openai_base_url, api_key=common.API_KEY)
    line = {
        "custom_id": "r0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-6-luna", "messages": [{"role": "user", "content": "hello"}]},
    }
    uploaded = oclient.files.create(file=("in.jsonl", json.dumps(line).encode() + b"\n"), purpose="batch")
    ids = [
        oclient.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(count)
    ]
    oclient.close()
    return ids


def run(
    *,
    waits: int = 1000,
    openai_anchor_waits: int = 20,
    poll_interval: float = 2.0,
    latency_ms: float = 200.0,
    warmup: float = 5.0,
    window: float = 15.0,
    max_warmup: float = 60.0,
    contenders: list[str] | None = None,
    log_http: bool = True,
) -> list[dict[str, Any]]:
    contenders = contenders or DEFAULT_CONTENDERS
    rows: list[dict[str, Any]] = []
    # Batches last ~11 days of virtual time at time_scale 1: never ending during the run.
    emulator = common.start_emulator(latency_ms=0, time_scale=1.0, batch_turnaround_s=1e6)
    try:
        need = {p: 0 for p in POLL_PATHS}
        for name in contenders:
            provider = CONTENDERS[name][1]
            need[provider] = max(need[provider], openai_anchor_waits if name == "official-openai" else waits)
        ids = {p: create_batches(emulator, p, n) if n else [] for p, n in need.items()}
        emulator.configure(latency_ms=latency_ms)
        env = common.connection_env(emulator.base_url)
        for name in contenders:
            label, provider = CONTENDERS[name]
            n = openai_anchor_waits if name == "official-openai" else waits
            config = {
                "contender": name,
                "provider": provider,
                "batch_ids": ids[provider][:n],
                "poll_interval": poll_interval,
                "warmup": warmup,
                "window": window,
                "max_warmup": max_warmup,
                "emulator": emulator.base_url,
                "emulator_pid": emulator._process.pid if emulator._process else None,
                "env": env,
                "log_http": log_http,
            }
            print(f"  triggers: {label}, {n} waits ...", file=sys.stderr, flush=True)
            result = common.run_child("bench.triggers", config, label=name, timeout=max_warmup + window + 240)
            result.update(
                contender=name, label=label, waits=n, poll_interval=poll_interval, latency_ms=latency_ms
            )
            rows.append(result)
    finally:
        emulator.stop()
    return rows


# -- child -----------------------------------------------------------------------------------------
def _make_triggers(name: str, provider: str, batch_ids: list[str], interval: float) -> list[Any]:
    if name.startswith("ours-"):
        # Operators first: see bench.landing (a circular import when triggers come first).
        import airflow_provider_tokentier.operators  # noqa: F401
        from airflow_provider_tokentier.triggers.batch import BatchTrigger

        conn_id = "tt_anthropic" if provider == "anthropic" else "tt_openai"
        return [
            BatchTrigger(provider=provider, conn_id=conn_id, batch_ids=[b], poll_interval=interval)
            for b in batch_ids
        ]
    far = time.time() + 7 * 24 * 3600
    if name == "official-anthropic":
        from airflow.providers.anthropic.triggers.batch import AnthropicBatchTrigger

        return [
            AnthropicBatchTrigger(
                conn_id="official_anthropic", batch_id=b, poll_interval=interval, end_time=far
            )
            for b in batch_ids
        ]
    from airflow.providers.openai.triggers.openai import OpenAIBatchTrigger

    return [
        OpenAIBatchTrigger(conn_id="official_openai", batch_id=b, poll_interval=interval, timeout=7 * 86400)
        for b in batch_ids
    ]


class _PolledBatches(logging.Handler):
    """Which batches have had a status poll answered, read from the SDKs' own request log.

    Every contender's SDK logs each request on the ``httpx2`` logger (at INFO, as Airflow
    configures it); the batch id is the URL's last segment. Removed before the window starts.
    """

    def __init__(self, batch_ids: list[str]) -> None:
        super().__init__(logging.INFO)
        self.pending = set(batch_ids)
        self.logger = logging.getLogger("httpx2")
        self.level_before = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2:
            self.pending.discard(str(args[1]).rsplit("/", 1)[-1])

    def all_seen(self) -> bool:
        return not self.pending

    def close(self) -> None:
        if self in self.logger.handlers:
            self.logger.removeHandler(self)
            self.logger.setLevel(self.level_before)
        super().close()


def _proc_cpu(pid: int | None) -> float | None:
    """CPU seconds used so far by another process (the emulator), from /proc."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(config: dict[str, Any]) -> dict[str, Any]:
    import httpx

    name, provider = config["contender"], config["provider"]
    interval, warmup, window = config["poll_interval"], config["warmup"], config["window"]
    admin = httpx.Client(base_url=config["emulator"], timeout=30)
    poll_path = POLL_PATHS[provider]

    # Its own thread: the default executor may be queued up with a contender's blocking polls.
    admin_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-admin")

    async def polls() -> int:
        def fetch() -> int:
            return int(admin.get("/_emulator/calls").json().get(poll_path, 0))

        return await asyncio.get_running_loop().run_in_executor(admin_thread, fetch)

    lag = {"startup": 0.0, "window": 0.0}
    phase = {"name": "startup"}
    lags_in_window: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.010)
            over = time.perf_counter() - before - 0.010
            key = phase["name"]
            if key in lag:
                lag[key] = max(lag[key], over)
                if key == "window":
                    lags_in_window.append(over)

    events: list[dict[str, Any]] = []

    async def consume(trigger: Any) -> None:
        async for event in trigger.run():
            events.append(event.payload)
            return

    # Built (and their modules imported) before the clock starts: imports are not the loop's work.
    triggers = _make_triggers(name, provider, config["batch_ids"], interval)
    if name.endswith("-prebuilt") or config.get("prewarm"):
        # Diagnostic: build the shared client before the waits start, so the figures show the
        # steady state without the start-up cost of building clients.
        from airflow_provider_tokentier.hooks.base import provider_hook

        await provider_hook(provider, triggers[0].conn_id).get_async_client()
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.5)
    polls_at_start = await polls()
    cpu_start = time.process_time()
    started = time.perf_counter()
    seen = _PolledBatches(config["batch_ids"])
    tasks = [asyncio.create_task(consume(t)) for t in triggers]
    # Warm-up: at least `warmup` seconds AND until every wait has completed a poll (each
    # contender's clients are built by then), so the window measures steady-state polling only.
    all_polled_s = None
    while True:
        await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - started
        if all_polled_s is None and seen.all_seen():
            all_polled_s = elapsed
            seen.close()
        if (all_polled_s is not None and elapsed >= warmup) or elapsed >= config["max_warmup"]:
            break
    seen.close()
    phase["name"] = "between"
    polls0 = await polls()
    phase["name"] = "window"
    load = os.getloadavg()[0]
    emu0 = _proc_cpu(config.get("emulator_pid"))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(window)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    emu1 = _proc_cpu(config.get("emulator_pid"))
    phase["name"] = "done"
    polls1 = await polls()
    for task in tasks:
        task.cancel()
    tick.cancel()
    await asyncio.gather(*tasks, tick, return_exceptions=True)
    await asyncio.get_running_loop().run_in_executor(admin_thread, admin.close)
    admin_thread.shutdown()
    window_polls = polls1 - polls0
    cpu = cpu1 - cpu0
    lags_in_window.sort()
    p99 = lags_in_window[int(len(lags_in_window) * 0.99)] if lags_in_window else 0.0
    return {
        "startup_polls": polls0 - polls_at_start,
        "all_polled_s": all_polled_s,
        "startup_cpu_s": cpu0 - cpu_start,
        "window_s": wall1 - wall0,
        "window_polls": window_polls,
        "polls_per_s": window_polls / (wall1 - wall0),
        "expected_polls_per_s": len(triggers) / interval,
        "cpu_s": cpu,
        "cpu_share": cpu / (wall1 - wall0),
        "cpu_ms_per_poll": (cpu * 1000 / window_polls) if window_polls else None,
        "max_lag_ms": lag["window"] * 1000,
        "p99_lag_ms": p99 * 1000,
        "startup_max_lag_ms": lag["startup"] * 1000,
        "emulator_cores": (emu1 - emu0) / (wall1 - wall0) if emu0 is not None and emu1 is not None else None,
        "load_1min": load,
        "events": len(events),
        "event_sample": events[:1],
    }


def child(config: dict[str, Any]) -> None:
    os.environ.update(config["env"])

    import airflow  # noqa: F401  (configures logging the way Airflow processes have it)

    if not config.get("log_http", True):
        for name in ("httpx", "httpx2", "httpcore", "anthropic", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
    result = asyncio.run(_drive(config))
    common.write_result(config, result)


# -- CLI -------------------------------------------------------------------------------------------
COLUMNS = [
    ("label", "contender"),
    ("waits", "waits"),
    ("polls_per_s", "polls/s"),
    ("cpu_ms_per_poll", "CPU ms/poll"),
    ("cpu_share", "CPU (cores)"),
    ("max_lag_ms", "max lag ms"),
    ("p99_lag_ms", "p99 lag ms"),
    ("all_polled_s", "s until all polled once"),
    ("emulator_cores", "emulator CPU (cores)"),
    ("startup_max_lag_ms", "start-up max lag ms"),
]


def main(argv: list[str]) -> None:
    config = common.child_config(argv)
    if config is not None:
        child(config)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.triggers", description=__doc__)
    parser.add_argument("--waits", type=int, default=1000)
    parser.add_argument("--openai-anchor-waits", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--max-warmup", type=float, default=60.0)
    parser.add_argument(
        "--contenders", nargs="*", choices=list(CONTENDERS), help=f"default: {' '.join(DEFAULT_CONTENDERS)}"
    )
    parser.add_argument("--no-http-logs", action="store_true", help="silence per-request SDK log lines")
    args = parser.parse_args(argv)
    rows = run(
        waits=args.waits,
        openai_anchor_waits=args.openai_anchor_waits,
        poll_interval=args.poll_interval,
        latency_ms=args.latency_ms,
        warmup=args.warmup,
        window=args.window,
        max_warmup=args.max_warmup,
        contenders=args.contenders,
        log_http=not args.no_http_logs,
    )
    print(common.format_table(rows, COLUMNS))
    print(json.dumps(rows, indent=1, default=str), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
