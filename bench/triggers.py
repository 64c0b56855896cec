"""Benchmark 1: many concurrent batch waits on ONE event loop.

Each contender runs in a fresh process with one asyncio loop holding ``waits`` trigger instances
(one batch each, same ``poll_interval``) against the emulator at 200 ms latency, plus a ticker
task that sleeps 10 ms and records how late it wakes up (event-loop lag). After a warm-up, a
fixed window measures:

* max event-loop lag (ms) during the window (and, separately, during start-up);
* wait-polls: fresh statuses delivered to waits, however they were fetched. For the anchors,
  which retrieve each batch on its own, that is the status GETs the emulator received; for ours
  it is what the shared status pollers handed to the waits;
* provider calls (list pages and retrieves the emulator received) per second and, for ours,
  per poller cycle;
* CPU per wait-poll: the process's CPU time (all threads) / wait-polls;
* how many fresh statuses the least-served wait got in the window, against window / interval.

Contenders: our ``BatchTrigger`` (Anthropic and OpenAI), the official Anthropic provider's
``AnthropicBatchTrigger`` and the official OpenAI provider's ``OpenAIBatchTrigger``. The
latter calls the blocking SDK on the event loop, so it runs with fewer waits (``--openai-anchor-waits``).
Every batch stays ``in_progress`` for the whole run (huge turnaround, time_scale 1).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import gc
import json
import logging
import os
import sys
import time
from typing import Any

from bench import common

POLL_PATHS = {"anthropic": "GET /v1/messages/batches/{id}", "openai": "GET /v1/batches/{id}"}
LIST_PATHS = {"anthropic": "GET /v1/messages/batches", "openai": "GET /v1/batches"}

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
    stall_stacks: bool = False,
) -> list[dict[str, Any]]:
    contenders = contenders or DEFAULT_CONTENDERS
    rows: list[dict[str, Any]] = []
    # No batch may end during the run: a wait whose batch ends leaves, and the least-served and
    # all-polled figures would then count a wait that is gone. Each request finishes at a uniform
    # share of the turnaround (at least 1 s), so with 1e6 s about 1 in 5,000 one-request batches
    # ended within a 200 s run (4 of 10,000 did); at 1e12 s none does (the emulator then
    # finishes them just inside the 24 h window).
    emulator = common.start_emulator(latency_ms=0, time_scale=1.0, batch_turnaround_s=1e12)
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
                "stall_stacks": stall_stacks,
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


class _OurPollers:
    """Wait-polls of our triggers: statuses the shared pollers handed to waits, and their cycles."""

    def __init__(self) -> None:
        from airflow_provider_tokentier.triggers import status_poller

        self._module = status_poller

    def _pollers(self) -> list[Any]:
        return list(self._module.active_pollers().values())

    def deliveries(self) -> int:
        return sum(p.deliveries for p in self._pollers())

    def cycles(self) -> int:
        return sum(p.cycles for p in self._pollers())

    def all_served(self, waits: int) -> bool:
        watches = [w for p in self._pollers() for w in p.watches()]
        return len(watches) >= waits and all(w.deliveries for w in watches)

    def per_wait(self) -> dict[int, int]:
        return {id(w): w.deliveries for p in self._pollers() for w in p.watches()}


class _LagMeter:
    """A ticker that sleeps 10 ms and records how late it wakes up, per phase of the run."""

    def __init__(self, stall: _StallSampler | None) -> None:
        self.stall = stall
        self.phase = "startup"
        self.worst = {"startup": 0.0, "window": 0.0}
        self.in_window: list[float] = []

    async def tick(self) -> None:
        while True:
            if self.stall is not None:
                self.stall.beat = time.perf_counter()
            before = time.perf_counter()
            await asyncio.sleep(0.010)
            over = time.perf_counter() - before - 0.010
            if self.phase in self.worst:
                self.worst[self.phase] = max(self.worst[self.phase], over)
                if self.phase == "window":
                    self.in_window.append(over)

    def restart(self) -> None:
        """Forget the stalls seen so far (module imports before the clock are not measured)."""
        if self.stall is not None:
            self.stall.beat = time.perf_counter()
            self.stall.samples.clear()

    def p99_window(self) -> float:
        lags = sorted(self.in_window)
        return lags[int(len(lags) * 0.99)] if lags else 0.0


class _StallSampler:
    """Diagnostic (``--stall-stacks``): what the loop thread runs whenever it stalls > 40 ms.

    A watcher thread samples the loop thread's stack every 10 ms while the ticker is late;
    the most frequent stacks (import machinery left out) go to the child's log at the end of
    start-up. This is how the start-up stalls (connection look-up, lazy imports, GC) were found.
    """

    def __init__(self, threshold: float = 0.04) -> None:
        import threading

        self.loop_thread = threading.get_ident()
        self.beat = time.perf_counter()
        self.threshold = threshold
        self.samples: collections.Counter[str] = collections.Counter()
        threading.Thread(target=self._run, daemon=True, name="bench-stall-sampler").start()

    def _run(self) -> None:
        import traceback

        while True:
            time.sleep(0.01)
            if time.perf_counter() - self.beat <= self.threshold:
                continue
            frame = sys._current_frames().get(self.loop_thread)
            if frame is None:
                continue
            stack = [f for f in traceback.extract_stack(frame) if "importlib" not in f.filename]
            self.samples[" <- ".join(f"{f.filename}:{f.lineno}:{f.name}" for f in reversed(stack[-12:]))] += 1

    def report(self) -> None:
        for key, count in self.samples.most_common(12):
            print(f"STALL x{count}: {key}", file=sys.stderr, flush=True)
        self.samples.clear()


class _GcPauses:
    """The longest garbage-collector pause since the last `take` (a pause stalls the loop too)."""

    def __init__(self) -> None:
        self._started = 0.0
        self._max = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._max = max(self._max, time.perf_counter() - self._started)

    def take(self) -> float:
        longest, self._max = self._max, 0.0
        return longest * 1000

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


class _EmulatorCalls:
    """The emulator's status-call counters, read on a thread of their own (the default
    executor may be queued up with a contender's blocking polls)."""

    def __init__(self, base_url: str, provider: str) -> None:
        import httpx

        self._admin = httpx.Client(base_url=base_url, timeout=30)
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-admin")
        self._paths = POLL_PATHS[provider], LIST_PATHS[provider]

    def _fetch(self) -> tuple[int, int]:
        counts = self._admin.get("/_emulator/calls").json()
        return int(counts.get(self._paths[0], 0)), int(counts.get(self._paths[1], 0))

    async def calls(self) -> tuple[int, int]:
        """(status retrieves, list calls) the emulator has answered so far."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._fetch)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._admin.close)
        self._thread.shutdown()


async def _prebuild_client(provider: str, conn_id: str) -> None:
    """Diagnostic: build the shared client before the waits start, so the figures show the
    steady state without the start-up cost of building clients."""
    from airflow_provider_tokentier.hooks.base import provider_hook

    await provider_hook(provider, conn_id).get_async_client()


async def _warm_up(
    started: float, ours: _OurPollers | None, seen: Any, waits: int, warmup: float, max_warmup: float
) -> float | None:
    """At least ``warmup`` seconds AND until every wait has had a status (each contender's clients
    are built by then), so the window measures steady-state polling only; when that took."""
    all_polled_s = None
    while True:
        await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - started
        done = ours.all_served(waits) if ours else seen is not None and seen.all_seen()
        if all_polled_s is None and done:
            all_polled_s = elapsed
        if (all_polled_s is not None and elapsed >= warmup) or elapsed >= max_warmup:
            break
    if seen is not None:
        seen.close()
    return all_polled_s


async def _counters(calls: Any, ours: _OurPollers | None) -> dict[str, Any]:
    """The emulator's status-call counters and, for ours, the pollers' own."""
    retrieves, lists = await calls()
    return {
        "retrieves": retrieves,
        "lists": lists,
        "deliveries": ours.deliveries() if ours else 0,
        "cycles": ours.cycles() if ours else 0,
        "per_wait": ours.per_wait() if ours else {},
    }


async def _drive(config: dict[str, Any]) -> dict[str, Any]:

    name, provider = config["contender"], config["provider"]
    interval, warmup, window = config["poll_interval"], config["warmup"], config["window"]
    emulator = _EmulatorCalls(config["emulator"], provider)
    meter = _LagMeter(_StallSampler() if config.get("stall_stacks") else None)
    stall = meter.stall

    events: list[dict[str, Any]] = []

    async def consume(trigger: Any) -> None:
        async for event in trigger.run():
            events.append(event.payload)
            return

    # Built (and their modules imported) before the clock starts: imports are not the loop's work.
    triggers = _make_triggers(name, provider, config["batch_ids"], interval)
    ours = _OurPollers() if name.startswith("ours-") else None
    if name.endswith("-prebuilt") or config.get("prewarm"):
        await _prebuild_client(provider, triggers[0].conn_id)
    gc_pauses = _GcPauses()
    meter.restart()
    tick = asyncio.create_task(meter.tick())
    await asyncio.sleep(0.5)
    rss_before = _rss_mb()[0]
    cpu_start = time.process_time()
    started = time.perf_counter()
    seen = None if ours else _PolledBatches(config["batch_ids"])
    tasks = [asyncio.create_task(consume(t)) for t in triggers]
    all_polled_s = await _warm_up(started, ours, seen, len(triggers), warmup, config["max_warmup"])
    startup_gc_ms = gc_pauses.take()
    if stall is not None:
        stall.report()
    meter.phase = "between"
    before = await _counters(emulator.calls, ours)
    meter.phase = "window"
    load = os.getloadavg()[0]
    emu0 = _proc_cpu(config.get("emulator_pid"))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(window)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    emu1 = _proc_cpu(config.get("emulator_pid"))
    meter.phase = "done"
    window_gc_ms = gc_pauses.take()
    gc_pauses.close()
    after = await _counters(emulator.calls, ours)
    rss_now, rss_peak = _rss_mb()
    lists = after["lists"] - before["lists"]
    provider_calls = after["retrieves"] - before["retrieves"] + lists
    deliveries = (after["deliveries"] - before["deliveries"]) if ours else provider_calls
    cycles = (after["cycles"] - before["cycles"]) if ours else None
    per_wait = sorted(n - before["per_wait"].get(k, 0) for k, n in after["per_wait"].items())
    for task in tasks:
        task.cancel()
    tick.cancel()
    await asyncio.gather(*tasks, tick, return_exceptions=True)
    await emulator.close()
    wall = wall1 - wall0
    cpu = cpu1 - cpu0
    return {
        "all_polled_s": all_polled_s,
        "startup_cpu_s": cpu0 - cpu_start,
        "window_s": wall,
        "window_polls": deliveries,
        "polls_per_s": deliveries / wall,
        "expected_polls_per_s": len(triggers) / interval,
        "provider_calls": provider_calls,
        "provider_calls_per_s": provider_calls / wall,
        "list_calls": lists,
        "cycles": cycles,
        # Anchors poll every wait on its own: one call per wait per interval.
        "calls_per_cycle": provider_calls / cycles if cycles else None,
        "min_polls_per_wait": per_wait[0] if per_wait else None,
        "median_polls_per_wait": per_wait[len(per_wait) // 2] if per_wait else None,
        "expected_polls_per_wait": window / interval,
        "cpu_s": cpu,
        "cpu_share": cpu / wall,
        "cpu_ms_per_poll": (cpu * 1000 / deliveries) if deliveries else None,
        "max_lag_ms": meter.worst["window"] * 1000,
        "p99_lag_ms": meter.p99_window() * 1000,
        "startup_max_lag_ms": meter.worst["startup"] * 1000,
        "startup_max_gc_ms": startup_gc_ms,
        "window_max_gc_ms": window_gc_ms,
        "rss_mb": rss_now,
        "rss_peak_mb": rss_peak,
        "rss_growth_mb": rss_now - rss_before,
        "emulator_cores": (emu1 - emu0) / wall if emu0 is not None and emu1 is not None else None,
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
    ("polls_per_s", "wait-polls/s"),
    ("provider_calls_per_s", "provider calls/s"),
    ("calls_per_cycle", "calls/cycle"),
    ("min_polls_per_wait", "min polls/wait"),
    ("expected_polls_per_wait", "polls/wait asked"),
    ("cpu_ms_per_poll", "CPU ms/wait-poll"),
    ("cpu_share", "CPU (cores)"),
    ("max_lag_ms", "max lag ms"),
    ("p99_lag_ms", "p99 lag ms"),
    ("all_polled_s", "s until all polled once"),
    ("emulator_cores", "emulator CPU (cores)"),
    ("startup_max_lag_ms", "start-up max lag ms"),
    ("startup_max_gc_ms", "start-up max GC pause ms"),
    ("rss_peak_mb", "peak RSS MB"),
    ("load_1min", "load (1 min)"),
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
    parser.add_argument(
        "--stall-stacks",
        action="store_true",
        help="log the loop thread's stacks while it stalls (diagnostic)",
    )
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
        stall_stacks=args.stall_stacks,
    )
    print(common.format_table(rows, COLUMNS))
    print(json.dumps(rows, indent=1, default=str), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
