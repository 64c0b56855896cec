"""A real Airflow stack for end-to-end tests and the demo: api-server, scheduler, dag-processor, triggerer.

`AirflowStack` runs each component as its own child process (its own session, so its own
process group) in a private ``AIRFLOW_HOME`` with a SQLite metadata DB and the LocalExecutor,
each with a log file there. The children get their whole configuration from environment
variables -- nothing is read from the caller's ``AIRFLOW_*`` settings -- and every one of them
(and whatever they spawn) carries a marker variable, so `stop` finds and ends all of it, also
task processes that moved to their own process group. Only loopback ports are used: the
api-server binds 127.0.0.1 on a free port and the log servers are not started (every
component writes its logs under the same ``AIRFLOW_HOME``, where the api-server reads them).

`ApiClient` is a small client of the REST API (``/api/v2``) with a JWT from ``/auth/token``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

#: Environment variable every process of a stack carries (value: the stack's token).
MARKER = "TOKENTIER_E2E_STACK"
#: Environment variable naming the component a process belongs to (inherited by what it starts).
COMPONENT_MARKER = "TOKENTIER_E2E_COMPONENT"

#: Components in start order; each is ``airflow <name>`` with the arguments below.
COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer")

#: Task instance states from which nothing more happens without a user.
FINISHED_TI = {"success", "failed", "skipped", "upstream_failed", "removed"}
FINISHED_RUN = {"success", "failed"}

#: As `airflow_provider_tokentier.state.ledger` makes dag/run/task ids path-safe.
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


class StackError(RuntimeError):
    """The stack did not start or did not reach an expected state."""


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the process that started it dies (Linux), so a
    test run killed outright (no teardown) does not leave the stack running on its own."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def emulator_connections(base_url: str, key: str = "emulator-key") -> dict[str, str]:
    """``anthropic_default`` / ``openai_default`` as ``AIRFLOW_CONN_*`` variables for the emulator."""
    return {
        f"AIRFLOW_CONN_{name}": json.dumps({"conn_type": conn_type, "host": base_url, "password": key})
        for name, conn_type in (
            ("ANTHROPIC_DEFAULT", "tokentier_anthropic"),
            ("OPENAI_DEFAULT", "tokentier_openai"),
        )
    }


#: The emulator's fast clock for the stack suites: an hour of batch time passes in about a second
#: of real time, with no faults (a scenario configures the ones it wants).
FAST_CLOCK: dict[str, Any] = {
    "time_scale": 3600.0,
    "batch_turnaround_s": 3600.0,
    "expire_rate": 0.0,
    "error_rate": 0.0,
    "poll_error_rate": 0.0,
    "flex_429_rate": 0.0,
    "latency_ms": 0.0,
}


@contextlib.contextmanager
def running_stack(
    stack: AirflowStack,
    dag_ids: list[str],
    name: str,
    *,
    start_timeout: float = 180.0,
    dags_timeout: float = 120.0,
) -> Iterator[AirflowStack]:
    """Start ``stack``, wait until ``dag_ids`` are parsed, yield it; stop it and check nothing is left."""
    started = time.monotonic()
    stack.start(timeout=start_timeout)
    try:
        stack.wait_dags(dag_ids, timeout=dags_timeout)
        print(f"{name} up in {time.monotonic() - started:.1f}s at {stack.base_url} (home {stack.home})")
        yield stack
    finally:
        stack.stop()
        left = stack.leftovers()
        assert not left, f"processes of the {name} still running after stop: {left}"


def fresh_emulator(emulator: Any, stack: AirflowStack, node: Any) -> Iterator[Any]:
    """A test's view of the session's emulator: emptied and on `FAST_CLOCK`; when the test
    failed, the tail of every component's log is printed with it (the fixture body of both
    stack suites)."""
    emulator.reset()
    emulator.configure(**FAST_CLOCK)
    yield emulator
    report = getattr(node, "rep_call", None)
    if report is not None and report.failed:
        print(stack.describe())


@dataclass
class Component:
    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class AirflowStack:
    """Airflow's processes in a private ``home``; use as a context manager or `start`/`stop`.

    :param home: the AIRFLOW_HOME (created; everything lives under it: DB, logs, state, log files).
    :param dags_folders: one folder, or several (each becomes a ``LocalDagBundle``).
    :param env: extra environment for every component: connections, DAG settings.
    :param parallelism: ``[core] parallelism``: worker slots of the LocalExecutor.
    :param fast: short scheduler/dag-processor/triggerer intervals, for tests.
    :param port: api-server port (default: a free one).
    :param password: the ``admin`` user's password (default: a random one).
    :param users: more SimpleAuthManager users, ``name -> "role"`` or ``"role:team1|team2"``;
        each gets a random password (`password_of`).
    :param bundle_teams: DAG folder index -> owning team. Teams are created after the migration
        and turn on ``[core] multi_team``: a user then reads a team's DAGs only in that team.
    """

    home: Path
    dags_folders: Path | Iterable[Path]
    env: Mapping[str, str] = field(default_factory=dict)
    parallelism: int = 4
    fast: bool = True
    port: int = 0
    password: str = ""
    users: Mapping[str, str] = field(default_factory=dict)
    bundle_teams: Mapping[int, str] = field(default_factory=dict)
    components: dict[str, Component] = field(default_factory=dict, init=False)
    token: str = field(default_factory=lambda: secrets.token_hex(8), init=False)
    _api: ApiClient | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.folders = (
            [Path(self.dags_folders).resolve()]
            if isinstance(self.dags_folders, (str, Path))
            else [Path(f).resolve() for f in self.dags_folders]
        )
        self.port = self.port or free_port()
        self.password = self.password or secrets.token_urlsafe(12)
        self.passwords = {"admin": self.password, **{u: secrets.token_urlsafe(12) for u in self.users}}
        self.logs_dir = self.home / "process-logs"
        self.state_root = self.home / "tokentier"

    # -- addresses -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> ApiClient:
        if self._api is None:
            self._api = ApiClient(self.base_url, "admin", self.password)
        return self._api

    @property
    def teams(self) -> list[str]:
        """Every team a bundle or a user names (the auth manager insists they all exist)."""
        named = set(self.bundle_teams.values())
        for spec in self.users.values():
            teams = spec.partition(":")[2]
            named.update(t for t in teams.split("|") if t)
        return sorted(named)

    def password_of(self, username: str) -> str:
        """The password of ``admin`` or of one of `users`."""
        return self.passwords[username]

    def client(self, username: str) -> ApiClient:
        """A REST API client acting as ``username`` (close it when done)."""
        return ApiClient(self.base_url, username, self.password_of(username))

    # -- environment -----------------------------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        """The full environment of every component: the caller's minus its Airflow and API settings."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "ANTHROPIC_", "OPENAI_", "TOKENTIER_", "PYTEST_"))
        }
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        bundles = [
            {
                "name": "dags-folder" if i == 0 else f"dags-{i}",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(folder)},
                **({"team_name": self.bundle_teams[i]} if i in self.bundle_teams else {}),
            }
            for i, folder in enumerate(self.folders)
        ]
        passwords = self.home / "passwords.json"
        env.update(
            {
                MARKER: self.token,
                "AIRFLOW_HOME": str(self.home),
                **self.backend_env(),
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.folders[0]),
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": secret,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                    ["admin:admin", *(f"{name}:{spec}" for name, spec in self.users.items())]
                ),
                "AIRFLOW__CORE__MULTI_TEAM": str(bool(self.teams)),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW__TOKENTIER__STATE_ROOT": str(self.state_root),
                # On a loaded machine importing a DAG file (Airflow, the SDKs) can pass the 30 s
                # default, and a failed file is not parsed again for a long while.
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "180",
                "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "240",
                # A trigger of a dead triggerer moves to a live one after this many seconds.
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1" if self.fast else "5",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6" if self.fast else "30",
            }
        )
        if self.fast:
            env.update(
                {
                    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
                    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
                    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                    # The DAG files do not change during a test session: parse each once.
                    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
                    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
                    "AIRFLOW__DAG_PROCESSOR__STALE_DAG_THRESHOLD": "600",
                }
            )
        env.update(self.env)
        return env

    def backend_env(self) -> dict[str, str]:
        """Metadata database and executor: SQLite in the home and the LocalExecutor."""
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        }

    def component_names(self) -> tuple[str, ...]:
        """The components `start` runs, in start order."""
        return COMPONENTS

    def component_env(self, name: str) -> dict[str, str]:
        """The environment of one component: the stack's, plus the component marker."""
        return {**self._env, COMPONENT_MARKER: name}

    def component_home(self, name: str) -> Path:
        """The working directory (and AIRFLOW_HOME) of one component."""
        return self.home

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0, components: Iterable[str] | None = None) -> AirflowStack:
        """Migrate the DB and start ``components`` (default `component_names`: all of them; the
        api-server must be one)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps(self.passwords))
        self._env = self.child_env()
        try:
            self._prepare()
            self._migrate()
            for name in self.component_names() if components is None else components:
                self._spawn(name)
            self._wait_api(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        """Before the database migration: what the stack stands on (nothing here: SQLite)."""

    def _airflow(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    def _migrate(self) -> None:
        log_path = self.logs_dir / "db-migrate.log"
        with log_path.open("wb") as log:
            result = subprocess.run(
                self._airflow("db", "migrate"),
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                timeout=300,
                check=False,
            )
        if result.returncode != 0:
            raise StackError(f"airflow db migrate failed:\n{log_path.read_text()[-5000:]}")
        for team in self.teams:
            self._run_cli("teams", "create", team)
        if not self._env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:"):
            return
        # WAL lets readers and one writer work at once: fewer "database is locked" stalls
        # with five processes on one SQLite file. The mode is stored in the file.
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
            db.execute("PRAGMA journal_mode=WAL")

    def _run_cli(self, *args: str) -> None:
        """``airflow *args`` before the components start (its output goes to a log file)."""
        log_path = self.logs_dir / f"cli-{args[0]}.log"
        with log_path.open("ab") as log:
            result = subprocess.run(
                self._airflow(*args),
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                timeout=300,
                check=False,
            )
        if result.returncode != 0:
            raise StackError(f"airflow {' '.join(args)} failed:\n{log_path.read_text()[-5000:]}")

    def command(self, name: str) -> list[str]:
        """The command line of one component."""
        return self._airflow(*self._args(name))

    def _args(self, name: str) -> list[str]:
        if name == "api-server":
            return ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        if name in ("scheduler", "triggerer"):
            return [name, "--skip-serve-logs"]
        return [name]

    def _spawn(self, name: str) -> Component:
        comp = self.components.get(name) or Component(name, self.command(name), self.logs_dir / f"{name}.log")
        self.components[name] = comp
        comp.starts += 1
        comp.log_file = comp.log_path.open("ab")
        comp.log_file.write(f"\n===== start #{comp.starts} at {time.strftime('%H:%M:%S')} =====\n".encode())
        comp.log_file.flush()
        comp.process = subprocess.Popen(
            comp.args,
            env=self.component_env(name),
            stdin=subprocess.DEVNULL,
            stdout=comp.log_file,
            stderr=subprocess.STDOUT,
            cwd=self.component_home(name),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return comp

    def _wait_api(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    return
            time.sleep(0.5)
        raise StackError(f"the api-server did not answer within {timeout:.0f}s\n{self.describe()}")

    def check_alive(self) -> None:
        """Raise with the logs if a component died on its own."""
        for comp in self.components.values():
            if comp.process is not None and comp.process.poll() is not None:
                raise StackError(
                    f"airflow {comp.name} exited with code {comp.process.returncode}\n{self.describe()}"
                )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the component's whole process group and reap it (SIGKILL: a crash).

        With SIGKILL, every other process the component started dies too, also task processes
        in process groups of their own: what the loss of the machine it ran on would take.
        """
        comp = self.components[name]
        assert comp.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(comp.process.pid, sig)
        if sig == signal.SIGKILL:
            for proc in self._own_processes(name):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        comp.process.wait(timeout=30)
        comp.process = None
        if comp.log_file is not None:
            comp.log_file.close()
            comp.log_file = None

    def restart(self, name: str) -> Component:
        if self.components[name].alive():
            self.kill(name, signal.SIGTERM)
        return self._spawn(name)

    def stop(self, grace: float = 10.0) -> None:
        """End every process of the stack: SIGTERM to each group, then SIGKILL what is left."""
        if self._api is not None:
            self._api.close()
            self._api = None
        procs = self._own_processes()
        for comp in self.components.values():
            if comp.alive():
                assert comp.process is not None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(comp.process.pid, signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _gone, alive = psutil.wait_procs(procs, timeout=grace)
        for comp in self.components.values():
            if comp.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(comp.process.pid, signal.SIGKILL)
        for proc in alive + self._own_processes():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        for comp in self.components.values():
            if comp.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    comp.process.wait(timeout=10)
                comp.process = None
            if comp.log_file is not None:
                comp.log_file.close()
                comp.log_file = None

    def _own_processes(self, component: str | None = None) -> list[psutil.Process]:
        """Every live process carrying this stack's marker (children, task processes, runners),
        or only those of ``component``."""
        found = []
        me = os.getpid()
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == me:
                continue
            with contextlib.suppress(psutil.Error):
                environ = proc.environ()
                if environ.get(MARKER) == self.token and (
                    component is None or environ.get(COMPONENT_MARKER) == component
                ):
                    found.append(proc)
        return found

    def leftovers(self) -> list[int]:
        """PIDs of this stack's processes still alive (should be empty after `stop`)."""
        return [p.pid for p in self._own_processes()]

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- diagnostics -----------------------------------------------------------------------------
    def describe(self, tail: int = 6000) -> str:
        """The tail of every component's log file, for failure messages."""
        parts = []
        for path in sorted(self.logs_dir.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"----- {path.name} (last {tail} chars) -----\n{text[-tail:]}")
        return "\n".join(parts)

    def task_log_roots(self) -> list[Path]:
        """The folders task and trigger logs are written to."""
        return [self.home / "logs"]

    def task_logs(self, dag_id: str) -> str:
        """Every task log file of ``dag_id`` (read from disk; includes trigger logs)."""
        parts = []
        for root in self.task_log_roots():
            for path in sorted(root.rglob("*.log")):
                if f"dag_id={dag_id}" in str(path):
                    text = path.read_text(errors="replace")
                    parts.append(f"----- {path.relative_to(self.home)} -----\n{text}")
        return "\n".join(parts)

    # -- waiting on the API ----------------------------------------------------------------------
    def wait_for(
        self, what: str, probe: Callable[[], Any], timeout: float = 120.0, interval: float = 0.3
    ) -> Any:
        """Call ``probe`` until it returns something truthy; fail with the logs after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive_except_killed()
            last = probe()
            if last:
                return last
            time.sleep(interval)
        raise StackError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

    def check_alive_except_killed(self) -> None:
        for comp in self.components.values():
            if comp.process is not None and comp.process.poll() is not None:
                raise StackError(f"airflow {comp.name} exited with code {comp.process.returncode}")

    def wait_dags(self, dag_ids: Iterable[str], timeout: float = 120.0) -> None:
        wanted = set(dag_ids)

        def probe() -> bool:
            known = {d["dag_id"] for d in self.api.get("/dags", params={"limit": 1000})["dags"]}
            return wanted <= known

        try:
            self.wait_for(f"DAGs {sorted(wanted)} to be parsed", probe, timeout)
        except StackError as exc:
            errors = self.api.get("/importErrors")
            raise StackError(f"{exc}\nimport errors: {json.dumps(errors, indent=1)}") from None

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Unpause ``dag_id`` and start a run now; return its run id."""
        self.api.patch(f"/dags/{dag_id}", {"is_paused": False})
        run = self.api.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": dict(conf or {})})
        run_id: str = run["dag_run_id"]
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str:
        state: str = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        return state

    def ti(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        ti: dict[str, Any] = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        return ti

    def ti_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        tis = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {t["task_id"]: t["state"] for t in tis}

    def wait_ti(
        self, dag_id: str, run_id: str, task_id: str, states: str | Iterable[str], timeout: float = 120.0
    ) -> dict[str, Any]:
        wanted = {states} if isinstance(states, str) else set(states)

        def probe() -> dict[str, Any] | None:
            ti = self.ti(dag_id, run_id, task_id)
            if ti["state"] in wanted:
                return ti
            if ti["state"] in FINISHED_TI:
                raise StackError(
                    f"{dag_id}.{task_id} ended {ti['state']}, wanted {sorted(wanted)}\n"
                    f"{self.task_logs(dag_id)[-8000:]}"
                )
            return None

        result: dict[str, Any] = self.wait_for(f"{dag_id}.{task_id} in {sorted(wanted)}", probe, timeout)
        return result

    def wait_run(self, dag_id: str, run_id: str, state: str = "success", timeout: float = 120.0) -> None:
        def probe() -> str | None:
            current = self.run_state(dag_id, run_id)
            return current if current in FINISHED_RUN else None

        final = self.wait_for(f"run {dag_id}/{run_id} to finish", probe, timeout)
        if final != state:
            raise StackError(
                f"run {dag_id}/{run_id} ended {final}, wanted {state}; tasks: "
                f"{self.ti_states(dag_id, run_id)}\n{self.task_logs(dag_id)[-12000:]}"
            )

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self.api.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": "true", "stringify": "false"},
        )
        return entry["value"]

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[dict[str, Any]]:
        body = {
            "dry_run": False,
            "task_ids": task_ids,
            "dag_run_id": run_id,
            "only_failed": False,
            "reset_dag_runs": True,
        }
        cleared: list[dict[str, Any]] = self.api.post(f"/dags/{dag_id}/clearTaskInstances", body)[
            "task_instances"
        ]
        return cleared

    def set_ti_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        return self.api.patch(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", {"new_state": state}
        )

    def ledger_dir(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Path:
        """Where the task's ledger lives under the stack's state root (names made path-safe)."""
        parts = (_UNSAFE.sub("_", p) for p in (dag_id, run_id, task_id))
        return self.state_root.joinpath(*parts, str(map_index), "ledger")


class ApiClient:
    """The REST API (``/api/v2``) as one user (``admin`` by default), with a JWT from ``/auth/token``."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self.username = username
        self.password = password
        self._client = httpx.Client(base_url=f"{base_url}/api/v2", timeout=30)
        self._token: str | None = None

    def close(self) -> None:
        self._client.close()

    def _login(self) -> None:
        response = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )
        response.raise_for_status()
        self._token = response.json()["access_token"]

    def request(self, method: str, path: str, body: Any = None, params: Any = None) -> Any:
        for attempt in range(5):
            if self._token is None:
                self._login()
            try:
                response = self._client.request(
                    method,
                    path,
                    json=body,
                    params=params,
                    headers={"Authorization": f"Bearer {self._token}"},
                )
            except httpx.TransportError:
                if attempt == 4:
                    raise
                time.sleep(1)
                continue
            if response.status_code == 401:
                self._token = None
                continue
            if response.status_code >= 500 and attempt < 4:
                # SQLite "database is locked" under load surfaces as a 500: try again.
                time.sleep(0.5)
                continue
            if response.status_code == 404:
                raise NotFound(f"{method} {path}: {response.text}")
            if response.status_code >= 400:
                raise StackError(f"{method} {path} -> {response.status_code}: {response.text}")
            return response.json() if response.content else None
        raise StackError(f"{method} {path}: no answer after retries")

    def get(self, path: str, params: Any = None) -> Any:
        return self.request("GET", path, params=params)

    def token(self) -> str:
        """This user's JWT (logs in on first use)."""
        if self._token is None:
            self._login()
        assert self._token is not None
        return self._token

    def fetch(self, path: str, params: Any = None) -> httpx.Response:
        """GET any path of the api-server (``/tokentier/...``, say) as this user; the raw response."""
        return httpx.get(
            f"{self.base_url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30,
        )

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body)


class NotFound(StackError):
    """The API answered 404."""
