"""A multi-machine Airflow deployment on one host, for the distributed end-to-end suite.

`DistributedStack` extends the e2e harness's `AirflowStack` (same process management: every
process in its own session, carrying the stack's marker variable, dying with the test run) with
the servers a production deployment stands on, all started and ended by the tests on free
loopback ports:

- PostgreSQL (Debian's ``postgresql``): a private cluster in a temporary directory, created with
  ``initdb`` and run in the foreground (as the ``postgres`` user when the tests run as root,
  since PostgreSQL refuses to run as root); the metadata database and Celery's result backend;
- Redis (Debian's ``redis-server``), without persistence: Celery's broker;
- an S3 API server (``moto[server]``) holding ``[tokentier] state_root``, reached through an
  ``aws`` connection named in the URI (``s3://<conn_id>@<bucket>/<prefix>``).

On them run the CeleryExecutor's scheduler, a dag-processor and an api-server (one "control"
machine), **two triggerers** and **two Celery workers**. Each triggerer and worker is a machine
of its own: its own ``AIRFLOW_HOME``, ``HOME`` and ``TMPDIR`` under ``machines/<name>/``, and its
own hostname (`tests.e2e_distributed.machine.hostname` reads it from the environment), so task
instances' and jobs' ``hostname`` say where they ran. Each worker consumes the shared
``default`` queue and a queue named after itself, so a DAG can pin a task to a machine.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg2
import redis

from tests.e2e.harness import AirflowStack, StackError, free_port
from tests.e2e_distributed.machine import MACHINE_VARIABLE

ROOT = Path(__file__).resolve().parents[2]

#: The database and user of the private PostgreSQL cluster (trust authentication on loopback).
PG_USER = "airflow"
PG_DATABASE = "airflow"

#: The connection the state root names, and where in the S3 API server the state lives.
S3_CONN_ID = "tokentier_s3"
S3_KEY = "moto-access-key"
S3_SECRET = "moto-secret-key"  # moto accepts any credentials
S3_REGION = "us-east-1"


def postgres_bindir() -> Path:
    """Debian's PostgreSQL server binaries (``/usr/lib/postgresql/<major>/bin``), newest first."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:

        def major(path: str) -> int:
            match = re.search(r"/postgresql/(\d+)/", path)
            return int(match.group(1)) if match else 0

        return Path(max(found, key=major)).parent
    which = shutil.which("initdb")
    if which is None:
        raise StackError("PostgreSQL's initdb is not installed (apt-get install postgresql)")
    return Path(which).resolve().parent


@dataclass
class DistributedStack(AirflowStack):
    """PostgreSQL, Redis, S3 (moto) and a CeleryExecutor deployment with two workers and two triggerers.

    :param bucket: the S3 bucket the state root lives in (created by `start`).
    :param workers: the Celery workers' machine names (each also a queue of its own).
    :param triggerers: the triggerers' machine names.
    :param worker_concurrency: task slots of each Celery worker.
    """

    bucket: str = "tokentier-state"
    workers: tuple[str, ...] = ("worker-a", "worker-b")
    triggerers: tuple[str, ...] = ("triggerer-1", "triggerer-2")
    worker_concurrency: int = 2
    ports: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ports = {name: free_port() for name in ("postgres", "redis", "s3")}
        self.machines_dir = self.home / "machines"
        # The private cluster's files must be reachable by the ``postgres`` user, and pytest's
        # temporary folders are not; mkdtemp at `start`, removed at `stop`.
        self.pg_dir: Path | None = None
        self._pg_data = Path()

    # -- addresses -------------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.ports['postgres']}/{PG_DATABASE}"

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports['redis']}/0"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def state_uri(self) -> str:
        """``[tokentier] state_root``: the bucket's ``state/`` prefix through the connection."""
        return f"s3://{S3_CONN_ID}@{self.bucket}/state"

    def s3_client(self) -> Any:
        """A boto3 client of the S3 API server, for the tests' own look at the bucket."""
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name=S3_REGION,
        )

    def s3_keys(self, prefix: str = "state/") -> list[str]:
        """Every object key under ``prefix`` in the state bucket."""
        keys: list[str] = []
        pages = self.s3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the metadata database (what the REST API does not show)."""
        with contextlib.closing(psycopg2.connect(self.database_url)) as db, db.cursor() as cursor:
            cursor.execute(query, params)
            return list(cursor.fetchall())

    # -- machines --------------------------------------------------------------------------------
    def machine_of(self, name: str) -> str:
        """The machine a component runs on: its own for workers and triggerers, else ``control``."""
        return name if name in (*self.workers, *self.triggerers) else "control"

    def machine_home(self, machine: str) -> Path:
        return self.home if machine == "control" else self.machines_dir / machine

    def component_home(self, name: str) -> Path:
        if name == "postgres" and self.pg_dir is not None:
            return self.pg_dir
        return self.machine_home(self.machine_of(name))

    def component_env(self, name: str) -> dict[str, str]:
        env = super().component_env(name)
        machine = self.machine_of(name)
        if name in ("postgres", "redis", "s3"):
            return env
        home = self.machine_home(machine)
        env[MACHINE_VARIABLE] = machine
        if machine != "control":
            env.update({"AIRFLOW_HOME": str(home), "HOME": str(home), "TMPDIR": str(home / "tmp")})
        return env

    def task_log_roots(self) -> list[Path]:
        return [self.machine_home(m) / "logs" for m in ("control", *self.triggerers, *self.workers)]

    # -- configuration ---------------------------------------------------------------------------
    def backend_env(self) -> dict[str, str]:
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.database_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.e2e_distributed.machine.hostname",
            # The callable above and the DAG files' helpers import from the repository.
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
            f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": json.dumps(
                {
                    "conn_type": "aws",
                    "login": S3_KEY,
                    "password": S3_SECRET,
                    "extra": {"endpoint_url": self.s3_endpoint, "region_name": S3_REGION},
                }
            ),
            # A worker that dies stops heartbeating its task: fail that try (and retry it
            # elsewhere) after 20 s rather than the default 5 minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        }

    def child_env(self) -> dict[str, str]:
        env = super().child_env()
        # The harness points the state root at local disk; this stack's lives on S3.
        env["AIRFLOW__TOKENTIER__STATE_ROOT"] = self.state_uri
        return env

    def component_names(self) -> tuple[str, ...]:
        return ("api-server", "dag-processor", "scheduler", *self.triggerers, *self.workers)

    def command(self, name: str) -> list[str]:
        if name == "postgres":
            return self._as_postgres_user(
                [
                    str(postgres_bindir() / "postgres"),
                    *("-D", str(self._pg_data), "-p", str(self.ports["postgres"])),
                    *("-k", str(self.pg_dir), "-c", "listen_addresses=127.0.0.1"),
                    # A throw-away cluster: durability buys nothing here and costs the tests time.
                    *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
                    *("-c", "max_connections=200"),
                ]
            )
        if name == "redis":
            redis_dir = self.home / "redis"
            redis_dir.mkdir(exist_ok=True)
            return [
                shutil.which("redis-server") or "redis-server",
                *("--bind", "127.0.0.1", "--port", str(self.ports["redis"]), "--dir", str(redis_dir)),
                *("--save", "", "--appendonly", "no"),
            ]
        if name == "s3":
            return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.ports["s3"])]
        if name in self.workers:
            return self._airflow(
                *("celery", "worker", "--queues", f"default,{name}"),
                *("--concurrency", str(self.worker_concurrency), "--celery-hostname", f"{name}@%h"),
                "--skip-serve-logs",
            )
        if name in self.triggerers:
            return self._airflow("triggerer", "--skip-serve-logs")
        return super().command(name)

    # -- lifecycle -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Start PostgreSQL, Redis and the S3 server; create the database, the bucket, the homes."""
        for machine in (*self.triggerers, *self.workers):
            (self.machine_home(machine) / "tmp").mkdir(parents=True, exist_ok=True)
        self._init_postgres()
        for name in ("postgres", "redis", "s3"):
            self._spawn(name)
        self._ready("PostgreSQL", self._postgres_answers)
        with contextlib.closing(psycopg2.connect(self.database_url.rsplit("/", 1)[0] + "/postgres")) as db:
            db.autocommit = True
            with db.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {PG_DATABASE}")
        self._ready("Redis", lambda: bool(redis.Redis(port=self.ports["redis"]).ping()))
        self._ready("the S3 server", lambda: httpx.get(self.s3_endpoint, timeout=5).status_code == 200)
        self.s3_client().create_bucket(Bucket=self.bucket)

    def _init_postgres(self) -> None:
        self.pg_dir = Path(tempfile.mkdtemp(prefix="tokentier-pg-"))
        self._pg_data = self.pg_dir / "data"
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.pg_dir, user.pw_uid, user.pw_gid)
        log_path = self.logs_dir / "initdb.log"
        with log_path.open("wb") as log:
            result = _run(
                self._as_postgres_user(
                    [
                        str(postgres_bindir() / "initdb"),
                        *("-D", str(self._pg_data), "-U", PG_USER, "--auth=trust"),
                        *("--encoding=UTF8", "--locale=C", "--no-sync"),
                    ]
                ),
                log,
                cwd=self.pg_dir,
            )
        if result != 0:
            raise StackError(f"initdb failed:\n{log_path.read_text()[-3000:]}")

    def _as_postgres_user(self, argv: list[str]) -> list[str]:
        """``argv`` as the ``postgres`` user when running as root (PostgreSQL refuses root)."""
        if os.geteuid() != 0:
            return argv
        return [
            "setpriv",
            *("--reuid=postgres", "--regid=postgres", "--init-groups"),
            # Changing the user clears the parent-death signal `_spawn` set: set it again.
            "--pdeathsig=TERM",
            "--",
            *argv,
        ]

    def _postgres_answers(self) -> bool:
        try:
            psycopg2.connect(self.database_url.rsplit("/", 1)[0] + "/postgres", connect_timeout=3).close()
        except psycopg2.OperationalError:
            return False
        return True

    def _ready(self, what: str, probe: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(Exception):
                if probe():
                    return
            time.sleep(0.3)
        raise StackError(f"{what} did not answer within {timeout:.0f}s\n{self.describe()}")

    def stop(self, grace: float = 10.0) -> None:
        super().stop(grace)
        if self.pg_dir is not None:
            shutil.rmtree(self.pg_dir, ignore_errors=True)
            self.pg_dir = None

    # -- looking at the deployment ---------------------------------------------------------------
    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of a task instance (REST API), first try first."""
        found = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        return sorted(found["task_instances"], key=lambda t: t["try_number"])

    def trigger_owner(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        """The machine of the triggerer running the task's trigger now, if one is."""
        rows = self.sql(
            "SELECT job.hostname FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id "
            "JOIN job ON job.id = t.triggerer_id "
            "WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = %s",
            dag_id,
            run_id,
            task_id,
        )
        return rows[0][0] if rows else None

    def machine_files(self, machine: str) -> Iterator[Path]:
        """Every file on a worker or triggerer machine (its home, temp dir included)."""
        yield from (p for p in self.machine_home(machine).rglob("*") if p.is_file())


def _run(argv: list[str], log: Any, cwd: Path) -> int:
    return subprocess.run(
        argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, timeout=120, check=False
    ).returncode
