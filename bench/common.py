"""Shared plumbing: an AIRFLOW_HOME, child processes per contender, RSS/CPU probes, tables.

Import this module before anything imports Airflow: it points ``AIRFLOW_HOME`` at a throw-away
directory (unless one is set) so a benchmark never touches a developer's Airflow home.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="tokentier-bench-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

#: Every contender's API key for the emulator (it accepts any non-empty key).
API_KEY = "bench-key"

#: Where a run keeps its inputs, state and child logs.
WORK_ROOT = Path(os.environ.get("TOKENTIER_BENCH_DIR") or tempfile.gettempdir()) / "tokentier-bench"


def work_dir(name: str) -> Path:
    path = WORK_ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- child processes -----------------------------------------------------------------------------
class ChildFailed(RuntimeError):
    """A contender's child process exited without a result."""


def run_child(module: str, config: dict[str, Any], *, label: str, timeout: float = 300.0) -> dict[str, Any]:
    """Run ``python -m module --child CONFIG`` in a fresh interpreter and return its JSON result.

    The child's stdout/stderr (Airflow and SDK log lines) go to a log file, so the terminal never
    slows a contender down; the result comes back through a file named in the config.
    """
    logs = work_dir("logs")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    log_path = logs / f"{module.rsplit('.', 1)[-1]}-{safe}.log"
    result_path = logs / f"{module.rsplit('.', 1)[-1]}-{safe}.json"
    result_path.unlink(missing_ok=True)
    config = {**config, "result_path": str(result_path)}
    # Through a file: 10,000 batch ids would pass the kernel's limit on one argument.
    config_path = logs / f"{module.rsplit('.', 1)[-1]}-{safe}.config.json"
    config_path.write_text(json.dumps(config))
    with log_path.open("wb") as log:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--child", f"@{config_path}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-4000:]
        raise ChildFailed(f"{label}: child exited with {proc.returncode}; log {log_path}:\n{tail}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


def child_config(argv: Sequence[str]) -> dict[str, Any] | None:
    """The config passed with ``--child``, or None when the module runs as the parent."""
    if len(argv) >= 2 and argv[0] == "--child":
        text = Path(argv[1][1:]).read_text() if argv[1].startswith("@") else argv[1]
        config: dict[str, Any] = json.loads(text)
        return config
    return None


def write_result(config: dict[str, Any], result: dict[str, Any]) -> None:
    Path(config["result_path"]).write_text(json.dumps(result))


# -- memory and CPU ------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_mb() -> float:
    """Current resident set size in MiB."""
    return _status_kb("VmRSS") / 1024


class PeakRSS:
    """Peak RSS growth over a block: the kernel's high-water mark, reset at the start.

    Writing ``5`` to ``/proc/self/clear_refs`` resets VmHWM to the current RSS, so the peak read
    afterwards belongs to the measured block only. Where that is not allowed, a sampling thread
    (every 2 ms) stands in.
    """

    def __init__(self) -> None:
        self.baseline_mb = 0.0
        self.peak_mb = 0.0
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled_kb = 0

    def __enter__(self) -> PeakRSS:
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            self._sampled_kb = _status_kb("VmRSS")
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        self.baseline_mb = rss_mb()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._sampled_kb = max(self._sampled_kb, _status_kb("VmRSS"))

    def __exit__(self, *exc: object) -> None:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self.peak_mb = self._sampled_kb / 1024
        else:
            self.peak_mb = _status_kb("VmHWM") / 1024

    @property
    def growth_mb(self) -> float:
        return max(0.0, self.peak_mb - self.baseline_mb)


@contextlib.contextmanager
def cpu_and_wall() -> Iterator[dict[str, float]]:
    """Process CPU seconds (all threads) and wall seconds spent in the block."""
    out: dict[str, float] = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        yield out
    finally:
        out["cpu_s"] = time.process_time() - cpu0
        out["wall_s"] = time.perf_counter() - wall0


# -- the emulator --------------------------------------------------------------------------------
def start_emulator(**knobs: Any) -> Any:
    """The emulator in its own process (its CPU is never counted against a contender)."""
    from airflow_provider_tokentier.testing import Emulator

    return Emulator(in_process=False, **knobs).start()


def connection_env(emulator_url: str) -> dict[str, str]:
    """Env-var connections for every contender, all pointing at the emulator."""
    return {
        # Ours: base URL as given (the hooks add or strip /v1 themselves).
        "AIRFLOW_CONN_TT_ANTHROPIC": json.dumps(
            {"conn_type": "tokentier_anthropic", "host": emulator_url, "password": API_KEY}
        ),
        "AIRFLOW_CONN_TT_OPENAI": json.dumps(
            {"conn_type": "tokentier_openai", "host": emulator_url, "password": API_KEY}
        ),
        # Official providers: host is handed to the SDK as base_url unchanged.
        "AIRFLOW_CONN_OFFICIAL_ANTHROPIC": json.dumps(
            {"conn_type": "anthropic", "host": emulator_url, "password": API_KEY}
        ),
        "AIRFLOW_CONN_OFFICIAL_OPENAI": json.dumps(
            {"conn_type": "openai", "host": emulator_url + "/v1", "password": API_KEY}
        ),
        # common.ai: a pydanticai connection per provider (host = the SDK's base_url).
        "AIRFLOW_CONN_COMMONAI_ANTHROPIC": json.dumps(
            {"conn_type": "pydanticai", "host": emulator_url, "password": API_KEY}
        ),
        "AIRFLOW_CONN_COMMONAI_OPENAI": json.dumps(
            {"conn_type": "pydanticai", "host": emulator_url + "/v1", "password": API_KEY}
        ),
    }


def fake_context(dag_id: str, task_id: str, run_id: str = "bench_run") -> dict[str, Any]:
    """The few context keys the operators read, for calling ``execute`` outside a task runner."""
    from types import SimpleNamespace

    ti = SimpleNamespace(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        map_index=-1,
        try_number=1,
        xcom_push=lambda *a, **k: None,
    )
    return {"ti": ti, "task_instance": ti, "run_id": run_id}


# -- reporting -----------------------------------------------------------------------------------
def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        mem = f"{int(handle.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    versions = {}
    for dist in (
        "apache-airflow",
        "anthropic",
        "openai",
        "apache-airflow-providers-anthropic",
        "apache-airflow-providers-openai",
        "apache-airflow-providers-common-ai",
    ):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "missing"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        **versions,
    }


def format_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table (readable as plain text too)."""
    header = [title for _key, title in columns]
    body = [[_cell(row.get(key)) for key, _title in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(ours: float | None, anchor: float | None) -> float | None:
    if ours is None or anchor is None or anchor == 0:
        return None
    return ours / anchor


def import_first_call_modules() -> None:
    """Import what a worker imports lazily on its first SDK request and connection lookup.

    Every contender imports the same modules inside its measured call otherwise (the child
    scripts record them as ``modules_imported_in_call``): the HTTP transport stack of both SDKs,
    Airflow's connection lookup through the task supervisor, and the local-file path class.
    With ``PYTHONDONTWRITEBYTECODE`` set, as on the benchmark machine, importing them also means
    compiling them: ~0.06 CPU s that is a one-time process cost, not submission or landing work.
    """
    import airflow.sdk.execution_time.supervisor  # noqa: F401
    import anyio.streams.tls  # noqa: F401
    import httpcore2  # noqa: F401
    import truststore  # noqa: F401
    import upath.implementations.local  # noqa: F401


def measured_call(call: Callable[[], T], label: str) -> tuple[T, list[str]]:
    """``call()`` and the modules first imported inside it (one-time costs that should be paid
    before the clock; see `import_first_call_modules`).

    Under cProfile when ``TOKENTIER_BENCH_PROFILE`` names a folder (diagnostics): the profile goes
    to ``<folder>/<label>.prof`` (read it with ``python -m pstats``). Profiling slows the call
    down, so figures of a profiled run are not results.
    """
    modules_before = set(sys.modules)
    folder = os.environ.get("TOKENTIER_BENCH_PROFILE")
    if not folder:
        result = call()
    else:
        import cProfile

        profile = cProfile.Profile()
        try:
            result = profile.runcall(call)
        finally:
            Path(folder).mkdir(parents=True, exist_ok=True)
            profile.dump_stats(str(Path(folder) / f"{label}.prof"))
    return result, sorted(set(sys.modules) - modules_before)
