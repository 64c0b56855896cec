"""The tokentier plugin on a real api-server: listed, authenticated, authorized, pages and JSON twins.

A stack of its own (module scope) in multi-team mode: the DAGs of ``tests/e2e/dags_restricted``
belong to the team ``finance``; the ``viewer`` user (role VIEWER, team ``analytics``) may read
every other DAG but none of those. That is how Airflow's SimpleAuthManager expresses per-DAG
access: a DAG's team comes from its bundle, and a non-admin user reads a team's DAGs only as a
member. ``admin`` reads everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from airflow_provider_tokentier.testing import Emulator
from tests.e2e.conftest import DAGS
from tests.e2e.harness import FAST_CLOCK, AirflowStack, emulator_connections

RESTRICTED = Path(__file__).parent / "dags_restricted"
#: Batches stay open until `release` (as in test_stack.py).
HOLD = {"time_scale": 60.0, "batch_turnaround_s": 1e7}


@pytest.fixture(scope="module")
def ui_stack(e2e_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """A stack with the ``viewer`` user and the ``finance`` team's bundle."""
    env = {
        **emulator_connections(e2e_emulator.base_url, "e2e-key"),
        "TOKENTIER_E2E_POLL": "0.5",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    }
    airflow = AirflowStack(
        tmp_path_factory.mktemp("airflow-ui"),
        [DAGS, RESTRICTED],
        env=env,
        parallelism=1,
        users={"viewer": "viewer:analytics"},
        bundle_teams={1: "finance"},
    )
    airflow.start()
    try:
        airflow.wait_dags(["e2e_deferred_wait", "e2e_restricted_finance"])
        yield airflow
    finally:
        airflow.stop()
        left = airflow.leftovers()
        assert not left, f"processes of the UI stack still running after stop: {left}"


@pytest.fixture(scope="module")
def deferred_run(ui_stack: AirflowStack, e2e_emulator: Emulator) -> Iterator[tuple[str, str]]:
    """``e2e_deferred_wait`` with its sensor deferred on a held batch; released at the end."""
    e2e_emulator.reset()
    e2e_emulator.configure(**{**FAST_CLOCK, **HOLD})
    dag_id = "e2e_deferred_wait"
    run_id = ui_stack.trigger(dag_id)
    ui_stack.wait_ti(dag_id, run_id, "ready", "deferred", timeout=180)
    yield dag_id, run_id
    e2e_emulator.advance(25 * 3600)


@pytest.fixture(scope="module")
def restricted_run(ui_stack: AirflowStack) -> str:
    """A run of the finance team's DAG (kept paused: its task instances exist but do not start)."""
    run = ui_stack.api.post("/dags/e2e_restricted_finance/dagRuns", {"logical_date": None, "conf": {}})
    run_id: str = run["dag_run_id"]
    return run_id


def seed_record(stack: AirflowStack, dag_id: str, run_id: str, task_id: str, record: dict[str, Any]) -> None:
    """Write a progress record into the stack's task state store, as a worker would."""
    with contextlib.closing(sqlite3.connect(stack.home / "airflow.db", timeout=30)) as db, db:
        (dag_run_pk,) = db.execute(
            "SELECT id FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        ).fetchone()
        db.execute(
            "INSERT OR REPLACE INTO task_state_store "
            "(dag_run_id, task_id, map_index, key, dag_id, run_id, value, updated_at) "
            "VALUES (?, ?, -1, 'tokentier_progress', ?, ?, ?, ?)",
            (dag_run_pk, task_id, dag_id, run_id, json.dumps(record), datetime.now(timezone.utc).isoformat()),
        )


def ti_path(dag_id: str, run_id: str, task_id: str, api: bool = False) -> str:
    return f"/tokentier/{'api/' if api else ''}ti/{dag_id}/{run_id}/{task_id}?map_index=-1"


def test_plugin_is_listed_with_its_app_and_views(ui_stack: AirflowStack) -> None:
    plugins = {p["name"]: p for p in ui_stack.api.get("/plugins")["plugins"]}
    plugin = plugins["tokentier"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/tokentier"]
    views = {v["destination"]: v for v in plugin["external_views"]}
    assert views["task_instance"]["href"].startswith("/tokentier/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}")
    assert views["nav"]["name"] == "LLM workloads"
    assert ui_stack.api.get("/importErrors")["total_entries"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/tokentier/workloads",
        "/tokentier/api/workloads",
        ti_path("e2e_deferred_wait", "x", "ready", api=True),
    ],
)
def test_no_page_without_a_session_or_token(ui_stack: AirflowStack, path: str) -> None:
    assert httpx.get(ui_stack.base_url + path, timeout=30).status_code == 401
    bad = httpx.get(ui_stack.base_url + path, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert bad.status_code in (401, 403)


def held_batches(emulator: Emulator) -> list[dict[str, Any]]:
    batches: list[dict[str, Any]] = emulator.batches().get("anthropic", [])
    return batches


def test_deferred_sensor_tab_and_json(
    ui_stack: AirflowStack, deferred_run: tuple[str, str], e2e_emulator: Emulator
) -> None:
    dag_id, run_id = deferred_run
    data = ui_stack.api.fetch(ti_path(dag_id, run_id, "ready", api=True)).json()
    assert data["tokentier"] is True
    assert data["state"] == "deferred"
    assert data["operator"] == "BatchSensor"
    # The record the worker wrote before deferring, read from the task state store.
    (batch,) = held_batches(e2e_emulator)
    record = data["record"]
    assert (record["operator"], record["phase"], record["round"]) == ("BatchSensor", "waiting", 1)
    assert [b["id"] for b in record["batches"]] == [batch["id"]]
    assert record["batches"][0]["url"].endswith("/" + batch["id"])
    assert record["totals"]["total"] == 4
    assert data["progress"]["total"] == 4
    page = ui_stack.api.fetch(ti_path(dag_id, run_id, "ready"))
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert batch["id"] in page.text

    # One row per workload: the submit task's record stays on its sensor's row.
    rows = ui_stack.api.fetch("/tokentier/api/workloads", {"dag_id": dag_id}).json()["workloads"]
    assert [(r["task_id"], r["state"], r["phase"]) for r in rows] == [("ready", "deferred", "waiting")]

    # A task that is not tokentier's gets one line.
    side = ui_stack.trigger("e2e_side_task")
    ui_stack.wait_run("e2e_side_task", side, timeout=120)
    note = ui_stack.api.fetch(ti_path("e2e_side_task", side, "side_work"))
    assert note.status_code == 200
    assert "is not a tokentier task" in note.text
    assert ui_stack.api.fetch(ti_path("e2e_side_task", side, "nope", api=True)).status_code == 404


def test_a_user_sees_only_dags_they_may_read(
    ui_stack: AirflowStack, deferred_run: tuple[str, str], restricted_run: str
) -> None:
    dag_id, run_id = deferred_run
    now = datetime.now(timezone.utc)
    landed = {
        "schema_version": 1,
        "operator": "BatchSensor",
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "tier": "batch",
        "phase": "landed",
        "round": 1,
        "max_rounds": 3,
        "totals": {"total": 3, "succeeded": 3, "errored": 0, "pending": 0},
        "cost_usd": 0.5,
        "standard_cost_usd": 1.0,
        "savings_usd": 0.5,
        "started_at": (now - timedelta(hours=2)).isoformat(),
        "updated_at": now.isoformat(),
    }
    seed_record(ui_stack, "e2e_restricted_finance", restricted_run, "ready", landed)

    viewer = ui_stack.client("viewer")
    try:
        forbidden = ti_path("e2e_restricted_finance", restricted_run, "ready")
        assert viewer.fetch(forbidden).status_code == 403
        assert viewer.fetch(forbidden.replace("/ti/", "/api/ti/")).status_code == 403
        assert ui_stack.api.fetch(forbidden).status_code == 200
        assert viewer.fetch(ti_path(dag_id, run_id, "ready")).status_code == 200

        mine = viewer.fetch("/tokentier/api/workloads").json()
        everything = ui_stack.api.fetch("/tokentier/api/workloads").json()
        assert "e2e_restricted_finance" not in {w["dag_id"] for w in mine["workloads"]}
        assert "e2e_restricted_finance" not in mine["summary"]["by_dag"]
        restricted = [w for w in everything["workloads"] if w["dag_id"] == "e2e_restricted_finance"]
        assert [(w["task_id"], w["phase"], w["cost_usd"]) for w in restricted] == [("ready", "landed", 0.5)]
        assert everything["summary"]["by_dag"]["e2e_restricted_finance"]["savings_usd"] == 0.5
        assert everything["summary"]["overall"]["workloads"] == mine["summary"]["overall"]["workloads"] + 1
        html = viewer.fetch("/tokentier/workloads")
        assert html.status_code == 200
        assert "e2e_restricted_finance" not in html.text
        # A filter the user may not read answers an empty list, not the DAG's rows.
        assert (
            viewer.fetch("/tokentier/api/workloads", {"dag_id": "e2e_restricted_finance"}).json()["workloads"]
            == []
        )
    finally:
        viewer.close()


# -- a real browser --------------------------------------------------------------------------------

#: Chromium from the Debian package (`.ci/run` installs it); Playwright never downloads one.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the browser test saves its screenshots: ``$TOKENTIER_SCREENSHOTS`` (docs/ for the
    README's images), else the test's temporary directory."""
    target = Path(os.environ.get("TOKENTIER_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def test_browser_login_tab_and_workloads_page(
    ui_stack: AirflowStack, deferred_run: tuple[str, str], e2e_emulator: Emulator, screenshots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    dag_id, run_id = deferred_run
    record = ui_stack.api.fetch(ti_path(dag_id, run_id, "ready", api=True)).json()["record"]
    assert record is not None, "the deferred sensor wrote no progress record"
    (batch,) = held_batches(e2e_emulator)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            # Log in through the auth manager's own form.
            page.goto(f"{ui_stack.base_url}/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", ui_stack.password)
            page.locator("button[type=submit]").click()
            page.wait_for_url(f"{ui_stack.base_url}/")

            # The deferred sensor's task instance, then its tokentier tab.
            page.goto(f"{ui_stack.base_url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/tasks/ready")
            page.locator('a[href$="/plugin/tokentier"]').first.click()
            tab = page.frame_locator("iframe").first
            expect(tab.locator("#tt-round")).to_have_text(f"{record['round']} of {record['max_rounds']}")
            expect(tab.locator("#tt-phase")).to_have_text("waiting")
            total = record["totals"]["total"]
            expect(tab.locator("#tt-progress")).to_contain_text(f"/ {total} rows")
            expect(tab.locator('#tt-counts .cnt[data-k="pending"]')).to_have_text(
                f"pending {record['totals']['pending']}"
            )
            expect(tab.locator("#tt-cost")).to_have_text(_usd(record["cost_usd"]))
            links = tab.locator("a.tt-batch-link")
            expect(links).to_have_count(1)
            assert links.first.inner_text() == batch["id"]
            assert links.first.get_attribute("href") == record["batches"][0]["url"]
            assert record["batches"][0]["url"].endswith("/" + batch["id"])
            assert links.first.get_attribute("target") == "_blank"
            page.screenshot(path=str(screenshots / "ui-task-instance-tab.png"))

            # The batch ends; the sensor lands its results: the workloads page shows the landing.
            e2e_emulator.advance(25 * 3600)
            ui_stack.wait_run(dag_id, run_id, timeout=180)
            landed = ui_stack.api.fetch(ti_path(dag_id, run_id, "ready", api=True)).json()["record"]
            assert landed["phase"] == "landed"

            # The "LLM workloads" page from the navigation.
            page.goto(f"{ui_stack.base_url}/")
            page.get_by_role("button", name="Browse").click()
            page.get_by_role("menuitem", name="LLM workloads").click()
            workloads = page.frame_locator("iframe").first
            row = workloads.locator("#tt-workloads tbody tr", has_text=f"{dag_id} / ready")
            expect(row).to_have_count(1)
            expect(row).to_contain_text("success")
            expect(row).to_contain_text(_usd(landed["cost_usd"]))
            expect(row.locator("a").first).to_have_attribute(
                "href", f"/dags/{dag_id}/runs/{quote(run_id, safe='')}/tasks/ready"
            )
            expect(workloads.locator("svg.tt-chart")).to_have_count(1)
            page.screenshot(path=str(screenshots / "ui-llm-workloads.png"), full_page=True)
        finally:
            browser.close()


def _usd(value: float | None) -> str:
    """As the tab prints money (`airflow_provider_tokentier.core.log_format.usd`)."""
    from airflow_provider_tokentier.core.log_format import usd

    return usd(value)
