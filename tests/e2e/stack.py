"""`make stack`: the example DAGs on a real Airflow stack with the emulator, for a person to browse.

Starts the emulator (a clock of 60 virtual seconds per real second, so an hour-long batch
takes about a minute, with a few expiries and errored lines) and Airflow's api-server,
scheduler (LocalExecutor), dag-processor and triggerer in a fresh AIRFLOW_HOME with SQLite,
loading ``dags_examples/``. Prints the UI address and the login, then runs until Ctrl-C and
stops everything. The same stack the e2e suite uses (``tests/e2e/harness.py``).

    python -m tests.e2e.stack [--port 8080] [--time-scale 60] [--trigger] [--home DIR]

``--trigger`` unpauses every example DAG so each runs once (scheduled DAGs start their
latest interval; DAGs without a schedule are triggered). Settings for the
example DAGs (``TOKENTIER_*`` variables such as ``TOKENTIER_DEMO_DOCS``) pass through from
your environment.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from tests.e2e.harness import AirflowStack, StackError, emulator_connections, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "dags_examples"


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _port(wanted: int) -> int:
    if wanted:
        return wanted
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 8080))
        except OSError:
            return free_port()
    return 8080


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="api-server port (default 8080 if free)")
    parser.add_argument("--time-scale", type=float, default=60.0, help="emulator virtual s per real s")
    parser.add_argument("--trigger", action="store_true", help="unpause and run every example DAG once")
    parser.add_argument("--home", type=Path, help="AIRFLOW_HOME to use (default: a fresh temporary one)")
    parser.add_argument("--dags", type=Path, default=EXAMPLES, help="DAGs folder (default dags_examples/)")
    args = parser.parse_args(argv)

    from airflow_provider_tokentier.testing import Emulator

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    home = args.home or Path(tempfile.mkdtemp(prefix="tokentier-stack-"))
    knobs = {
        "time_scale": args.time_scale,
        "batch_turnaround_s": 3600.0,
        "expire_rate": 0.02,
        "error_rate": 0.01,
        "seed": 7,
    }
    stack: AirflowStack | None = None
    print(f"tokentier stack: starting (AIRFLOW_HOME {home}) ...", flush=True)
    try:
        with Emulator(in_process=False, **knobs) as emulator:
            env = {
                **emulator_connections(emulator.base_url),
                # The examples read their settings from TOKENTIER_* variables; a gentler poll
                # than the tests' suits a clock a person can follow.
                "TOKENTIER_POLL_INTERVAL": "5",
                "TOKENTIER_DEMO_DOCS": "200",
                **{k: v for k, v in os.environ.items() if k.startswith("TOKENTIER_")},
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
                # Pick up edits to the example DAGs within seconds.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            }
            stack = AirflowStack(home, args.dags, env=env, parallelism=4, fast=False, port=_port(args.port))
            stack.start()
            dag_ids = _wait_for_examples(stack)
            if args.trigger:
                _run_each(stack, dag_ids)
            print(
                "\n"
                f"  Airflow UI:   {stack.base_url}\n"
                f"  login:        admin / {stack.password}\n"
                f"  DAGs:         {', '.join(dag_ids) or '(none parsed yet)'} from {args.dags}\n"
                f"  emulator:     {emulator.base_url} ({knobs})\n"
                f"  process logs: {stack.logs_dir}\n"
                "\n"
                "  Unpause a DAG and trigger it in the UI. Ctrl-C stops everything.\n",
                flush=True,
            )
            while True:
                stack.check_alive()
                time.sleep(1)
    except _Stop as stop:
        print(f"\ntokentier stack: {stop} received, stopping ...", flush=True)
        return 0
    except StackError as exc:
        print(f"tokentier stack failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        if stack is not None:
            stack.stop()
            left = stack.leftovers()
            if left:
                print(f"tokentier stack: processes left running: {left}", file=sys.stderr)
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
        print("tokentier stack: stopped.", flush=True)


def _wait_for_examples(stack: AirflowStack, timeout: float = 120.0) -> list[str]:
    """The DAG ids parsed from the folder, once every DAG file had its first parse."""
    files = [p for p in stack.folders[0].glob("*.py") if p.name != "__init__.py"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        with contextlib.suppress(StackError):
            dags = stack.api.get("/dags", params={"limit": 1000})["dags"]
            errors = stack.api.get("/importErrors")["import_errors"]
            seen = {Path(d["fileloc"]).name for d in dags} | {Path(e["filename"]).name for e in errors}
            if all(f.name in seen or not _defines_dag(f) for f in files):
                for error in errors:
                    print(f"  import error in {error['filename']}:\n{error['stack_trace']}", file=sys.stderr)
                return sorted(d["dag_id"] for d in dags)
        time.sleep(1)
    return []


def _run_each(stack: AirflowStack, dag_ids: list[str]) -> None:
    """One run of each DAG: unpausing a scheduled DAG starts its latest interval; others are triggered."""
    for dag_id in dag_ids:
        dag = stack.api.patch(f"/dags/{dag_id}", {"is_paused": False})
        if dag.get("timetable_summary") in (None, "None"):
            print(f"  triggered {dag_id}: {stack.trigger(dag_id)}")
        else:
            print(f"  unpaused {dag_id} ({dag['timetable_summary']}): its latest scheduled run starts now")


def _defines_dag(path: Path) -> bool:
    text = path.read_text(errors="replace")
    return "DAG(" in text or "@dag" in text


if __name__ == "__main__":
    sys.exit(main())
