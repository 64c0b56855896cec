"""FlexOperator and StandardOperator through `dag.test()` against the emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_tokentier.operators import FlexOperator, StandardOperator
from airflow_provider_tokentier.results import read_results
from airflow_provider_tokentier.testing import Emulator

MODEL = "gpt-6-luna"


def _chat_rows(n: int) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"q{i}", "body": {"messages": [{"role": "user", "content": f"Q{i}?"}]}}
        for i in range(n)
    ]


@pytest.fixture
def emulator_conns(tokentier_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The default connections point at the emulator (env JSON, as in `make demo`)."""
    for name, conn_type in (
        ("OPENAI_DEFAULT", "tokentier_openai"),
        ("ANTHROPIC_DEFAULT", "tokentier_anthropic"),
    ):
        conn = {"conn_type": conn_type, "host": tokentier_emulator.base_url, "password": "k"}
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(conn))
    return tokentier_emulator


def _return_value(run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")
            .one()
        )
        return XComModel.deserialize_value(row)


def _serialize(dag: Any) -> None:
    """Write ``dag`` to the metadata DB as the dag-processor would (dag.test() needs it there)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.flush()
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def _test_run(dag: Any) -> Any:
    _serialize(dag)
    return dag.test()


def _dag(dag_id: str) -> Any:
    from airflow.sdk import DAG

    return DAG(
        dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC"), catchup=False
    )


def test_flex_operator_dag_test(airflow_db: Path, emulator_conns: Emulator, tmp_path: Path) -> None:
    emulator_conns.configure(flex_429_rate=0.5)
    with _dag("tokentier_flex_test") as dag:
        FlexOperator(
            task_id="flex",
            requests=_chat_rows(30),
            endpoint="/v1/chat/completions",
            model=MODEL,
            flex_patience=0,
            max_concurrency=4,
            progress_every=10,
            state_root=str(tmp_path / "state"),
        )
    run = _test_run(dag)
    assert str(run.state) == "success"

    manifest = _return_value(run, "flex")
    assert manifest["total"] == 30
    assert manifest["counts"]["succeeded"] == 30
    assert manifest["results_uri"].endswith("/flex/-1/results.jsonl")
    assert str(tmp_path / "state") in manifest["results_uri"]
    rows = list(read_results(manifest))
    billed = {tier: b["requests"] for tier, b in emulator_conns.billing()["by_tier"].items()}
    ours = {tier: n for tier, n in manifest["tiers"].items() if n}
    assert ours == billed
    assert set(ours) == {"flex", "standard"}
    assert sum(1 for row in rows if row["tier"] == "flex") == billed["flex"]
    assert manifest["cost_usd"] == pytest.approx(emulator_conns.billing()["usd"], abs=1e-6)


def test_flex_operator_bad_row_fails_before_any_call(
    airflow_db: Path, emulator_conns: Emulator, tmp_path: Path
) -> None:
    rows = _chat_rows(5)
    rows[3] = {"custom_id": "bad id!", "body": rows[3]["body"]}
    with _dag("tokentier_flex_bad_row") as dag:
        FlexOperator(
            task_id="flex",
            requests=rows,
            model=MODEL,
            endpoint="/v1/chat/completions",
            state_root=str(tmp_path),
        )
    run = _test_run(dag)
    assert str(run.state) == "failed"
    assert emulator_conns.calls() == {}


def test_standard_operator_requests_uri_and_results_uri(
    airflow_db: Path, emulator_conns: Emulator, tmp_path: Path
) -> None:
    requests = tmp_path / "requests.jsonl"
    with requests.open("w") as handle:
        for i in range(7):
            row = {
                "custom_id": f"a{i}",
                "params": {"max_tokens": 32, "messages": [{"role": "user", "content": f"Hi {i}"}]},
            }
            handle.write(json.dumps(row) + "\n")
    results = tmp_path / "out" / "results.jsonl"
    with _dag("tokentier_standard_test") as dag:
        StandardOperator(
            task_id="standard",
            provider="anthropic",
            requests_uri=f"file://{requests}",
            model="claude-haiku-4-5",
            results_uri=f"file://{results}",
            state_root=str(tmp_path / "state"),
        )
    run = _test_run(dag)
    assert str(run.state) == "success"
    manifest = _return_value(run, "standard")
    assert manifest["tiers"] == {"batch": 0, "flex": 0, "standard": 7}
    assert manifest["cost_usd"] == pytest.approx(emulator_conns.billing()["usd"], abs=1e-6)
    assert sorted(row["custom_id"] for row in read_results(str(results))) == [f"a{i}" for i in range(7)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_unavailable": "wait"}, "on_unavailable"),
        ({"non_flex_model": "skip"}, "non_flex_model"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"flex_patience": -1}, "flex_patience"),
        ({"requests": None}, "exactly one"),
    ],
)
def test_flex_operator_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"task_id": "flex", "requests": _chat_rows(1), **kwargs}
    with pytest.raises(ValueError, match=message):
        FlexOperator(**arguments)


def test_standard_operator_rejects_unknown_provider() -> None:
    with pytest.raises(ValueError, match="provider"):
        StandardOperator(task_id="s", provider="gemini", requests=[])


def test_every_public_parameter_is_documented() -> None:
    import inspect

    from airflow.sdk import BaseOperator

    def accepted(operator: type) -> set[str]:
        """The keyword arguments the operator's own __init__ and its tokentier bases take."""
        params: set[str] = set()
        for klass in operator.__mro__[: operator.__mro__.index(BaseOperator)]:
            if "__init__" in vars(klass):
                params |= set(inspect.signature(vars(klass)["__init__"]).parameters)
        return params - {"self", "kwargs"}

    # FlexOperator passes provider="openai" itself.
    for operator, params in (
        (FlexOperator, accepted(FlexOperator) - {"provider"}),
        (StandardOperator, accepted(StandardOperator)),
    ):
        documented = [
            line.split(":param ")[1].split(":")[0]
            for line in (operator.__doc__ or "").splitlines()
            if ":param " in line
        ]
        assert len(documented) == len(set(documented)), operator.__name__
        assert params == set(documented), operator.__name__
