"""Test-session set-up shared by every suite.

Airflow reads its configuration when first imported, so the isolated AIRFLOW_HOME must be in
the environment before anything imports airflow: that is why this runs at module import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="tokentier-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_HOME / "dags")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
# Tests must never reach a real provider, whatever the developer's shell holds.
for _key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
    os.environ.pop(_key, None)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's private AIRFLOW_HOME."""
    return _HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated metadata database (SQLite in the session's AIRFLOW_HOME)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=dict(os.environ),
    )
    return airflow_home


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[Any]:
    """A real S3 API server (``moto_server``) on a free loopback port, for the whole session."""
    from tests.s3server import MotoS3

    with MotoS3() as server:
        yield server


@pytest.fixture
def s3_root(moto_s3: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh bucket, reachable through the Airflow connection ``tt_s3``: ``s3://tt_s3@<bucket>/state``.

    The default AWS credential chain points at the server too, for URIs without a conn_id.
    """
    import re
    import uuid

    for key, value in {**moto_s3.connection_uri_env("tt_s3"), **moto_s3.default_credentials_env()}.items():
        monkeypatch.setenv(key, value)
    bucket = (
        re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{uuid.uuid4().hex[:8]}"
    )
    moto_s3.create_bucket(bucket)
    return f"s3://tt_s3@{bucket}/state"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item (``item.rep_call``): the stack suites' fixtures
    print the components' logs when the test itself failed."""
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report
