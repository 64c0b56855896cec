"""A real S3 API server for tests: ``moto_server`` (from ``moto[server]``) on a free loopback port.

It runs as its own process, so it outlives a worker the test SIGKILLs. Every request it serves
is counted from its access log, which is how the tests and ``bench/`` measure object-store
traffic.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

_RUNNING = re.compile(rb"Running on (http://127\.0\.0\.1:\d+)")
_REQUEST = re.compile(rb'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')

#: Credentials moto accepts (any do); never real ones.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


class MotoS3:
    """``moto_server`` on 127.0.0.1 with a free port; use as a context manager.

    ``requests()`` counts what it served by method since start (or the last ``reset()``).
    """

    def __init__(self, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self.endpoint = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def __enter__(self) -> MotoS3:
        executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        self._proc = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        deadline = time.monotonic() + self.startup_timeout
        while not self.endpoint:
            line = self._proc.stderr.readline()
            if not line and (self._proc.poll() is not None or time.monotonic() > deadline):
                self.__exit__(None, None, None)
                raise RuntimeError("moto_server did not start")
            if match := _RUNNING.search(line):
                self.endpoint = match.group(1).decode()
        self._reader = threading.Thread(target=self._count_requests, daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _count_requests(self) -> None:
        assert self._proc is not None
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            if match := _REQUEST.search(line):
                with self._lock:
                    self._counts[match.group(1).decode()] += 1

    def requests(self, settle: float = 0.3) -> dict[str, int]:
        """Requests served so far, by HTTP method (after ``settle`` seconds for the log to drain)."""
        time.sleep(settle)
        with self._lock:
            return dict(self._counts)

    def total(self, settle: float = 0.3) -> int:
        return sum(self.requests(settle).values())

    def reset(self, settle: float = 0.3) -> None:
        time.sleep(settle)
        with self._lock:
            self._counts.clear()

    def client(self) -> Any:
        """A boto3 S3 client for the server (test set-up and inspection only)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (paginated)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def connection_uri_env(self, conn_id: str) -> dict[str, str]:
        """Environment defining ``conn_id`` as an Airflow AWS connection to this server."""
        conn = {
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": {"endpoint_url": self.endpoint, "region_name": REGION},
        }
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}

    def default_credentials_env(self) -> dict[str, str]:
        """Environment for the default credential chain (``s3://bucket/...`` without a conn_id)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }


def environ_with(*updates: dict[str, str]) -> dict[str, str]:
    """``os.environ`` with ``updates`` applied (for subprocesses)."""
    env = dict(os.environ)
    for update in updates:
        env.update(update)
    return env
