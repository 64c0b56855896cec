"""Every class of bad input, with the error it must raise, and not one paid call.

One table for arguments refused when the DAG file is parsed, one for inputs refused when the task
runs (files, rows, connections, rendered templates). README "Errors" explains each to users.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pendulum
import pytest

from airflow_provider_tokentier.exceptions import InvalidArgumentError
from airflow_provider_tokentier.operators import (
    BatchSubmitOperator,
    FlexOperator,
    StandardOperator,
    TieredInferenceOperator,
)
from airflow_provider_tokentier.sensors import BatchSensor
from tests.airflow.helpers import anthropic_rows, openai_rows, rows_for, run_dag, task_output

SUBMISSION = {"provider": "anthropic", "batches": []}
ROWS = anthropic_rows(2)

# (operator, kwargs, parameter named by the error, words the message must hold)
PARSE_TIME = {
    "max-rounds-string": (
        BatchSensor,
        {"submission": SUBMISSION, "max_rounds": "3"},
        "max_rounds",
        ["string"],
    ),
    "max-rounds-zero": (BatchSensor, {"submission": SUBMISSION, "max_rounds": 0}, "max_rounds", [">= 1"]),
    "cap-string": (
        BatchSubmitOperator,
        {"provider": "anthropic", "requests": ROWS, "max_requests_per_batch": "100"},
        "max_requests_per_batch",
        ["string", "without quotes"],
    ),
    "cap-float": (
        TieredInferenceOperator,
        {"provider": "anthropic", "requests": ROWS, "max_bytes_per_batch": 1.5},
        "max_bytes_per_batch",
        ["integer"],
    ),
    "poll-interval-negative": (
        BatchSensor,
        {"submission": SUBMISSION, "poll_interval": -5},
        "poll_interval",
        ["> 0"],
    ),
    "poll-interval-tiered": (
        TieredInferenceOperator,
        {"provider": "anthropic", "requests": ROWS, "poll_interval": -5},
        "poll_interval",
        ["-5"],
    ),
    "deadline-int": (
        BatchSensor,
        {"submission": SUBMISSION, "deadline": 3600},
        "deadline",
        ["timedelta(seconds=3600)"],
    ),
    "deadline-int-tiered": (
        TieredInferenceOperator,
        {"provider": "anthropic", "requests": ROWS, "deadline": 3600},
        "deadline",
        ["timedelta"],
    ),
    "deadline-garbage": (
        BatchSensor,
        {"submission": SUBMISSION, "deadline": "tomorrow-ish"},
        "deadline",
        ["ISO 8601"],
    ),
    "prices-broken-json": (
        BatchSensor,
        {"submission": SUBMISSION, "prices": '{"anthropic": {"m": '},
        "prices",
        ["not valid JSON"],
    ),
    "prices-missing-field": (
        TieredInferenceOperator,
        {"provider": "anthropic", "requests": ROWS, "prices": {"anthropic": {"m": {"input": 1}}}},
        "prices",
        ["output"],
    ),
    "prices-wrong-type": (
        StandardOperator,
        {"provider": "anthropic", "requests": ROWS, "prices": 3},
        "prices",
        ["int"],
    ),
    "batch-ids-string": (
        BatchSensor,
        {"provider": "anthropic", "batch_ids": "msgbatch_01"},
        "batch_ids",
        ["['msgbatch_01']"],
    ),
    "batch-ids-empty": (BatchSensor, {"provider": "openai", "batch_ids": []}, "batch_ids", ["non-empty"]),
    "flag-string": (
        StandardOperator,
        {"provider": "anthropic", "requests": ROWS, "fail_on_partial": "False"},
        "fail_on_partial",
        ["True or False"],
    ),
    "concurrency-string": (
        FlexOperator,
        {"requests": openai_rows(1), "max_concurrency": "4"},
        "max_concurrency",
        ["string"],
    ),
    "nan-timeout": (
        StandardOperator,
        {"provider": "openai", "requests": openai_rows(1), "request_timeout": float("nan")},
        "request_timeout",
        ["nan"],
    ),
    "ratio-out-of-range": (
        TieredInferenceOperator,
        {"provider": "anthropic", "requests": ROWS, "cached_input_ratio": 1.5},
        "cached_input_ratio",
        ["at most 1"],
    ),
    "patience-zero": (
        BatchSensor,
        {"submission": SUBMISSION, "poll_error_patience": 0},
        "poll_error_patience",
        [],
    ),
    "stuck-after-zero": (BatchSensor, {"submission": SUBMISSION, "stuck_after": 0}, "stuck_after", []),
    "safety-margin": (
        BatchSubmitOperator,
        {"provider": "openai", "requests": [], "safety_margin": 1.5},
        "safety_margin",
        ["at most 1"],
    ),
    "rescue-flex-anthropic": (
        TieredInferenceOperator,
        {"provider": "anthropic", "requests": ROWS, "rescue_tier": "flex"},
        "rescue_tier",
        ["OpenAI"],
    ),
    "unknown-provider": (
        BatchSubmitOperator,
        {"provider": "mistral", "requests": ROWS},
        "provider",
        ["mistral"],
    ),
    "both-sources": (
        StandardOperator,
        {"provider": "anthropic", "requests": ROWS, "requests_uri": "file:///r.jsonl"},
        "requests",
        ["exactly one"],
    ),
    "bad-endpoint": (
        FlexOperator,
        {"requests": openai_rows(1), "endpoint": "/v1/images"},
        "endpoint",
        ["/v1/images"],
    ),
    "empty-model": (
        BatchSubmitOperator,
        {"provider": "anthropic", "requests": ROWS, "model": ""},
        "model",
        [],
    ),
}


@pytest.mark.parametrize("case", list(PARSE_TIME))
def test_bad_argument_is_refused_when_the_dag_is_parsed(emulator, case):
    operator, kwargs, parameter, words = PARSE_TIME[case]
    with pytest.raises(InvalidArgumentError) as raised:
        operator(task_id="t", **kwargs)
    assert raised.value.parameter == parameter, str(raised.value)
    assert str(raised.value).startswith(f"{parameter}: ")
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))
    assert emulator.calls() == {}


@pytest.mark.parametrize(
    ("operator", "kwargs"),
    [
        (BatchSensor, {"submission": "{{ ti.xcom_pull('submit') }}", "deadline": "{{ params.deadline }}"}),
        (BatchSensor, {"provider": "openai", "batch_ids": "{{ ti.xcom_pull('ids') }}"}),
        (
            TieredInferenceOperator,
            {"provider": "openai", "requests": ROWS, "endpoint": "{{ params.endpoint }}"},
        ),
        (BatchSubmitOperator, {"provider": "openai", "requests": ROWS, "endpoint": "{{ params.endpoint }}"}),
        (FlexOperator, {"requests": "{{ ti.xcom_pull('rows') }}", "endpoint": "{{ params.ep }}"}),
    ],
    ids=["sensor-deadline", "sensor-batch-ids", "tiered-endpoint", "submit-endpoint", "flex-endpoint"],
)
def test_templates_are_not_judged_before_they_are_rendered(operator, kwargs):
    operator(task_id="t", **kwargs)


# -- run time: a DAG run whose first task fails, naming the problem, with nothing paid -----------------


def _file(tmp_path, data: bytes) -> dict[str, Any]:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(data)
    return {"requests_uri": f"file://{path}"}


_LINE = (json.dumps(anthropic_rows(1)[0]) + "\n").encode()

# (submit kwargs builder(tmp_path), words the task log must hold)
RUN_TIME = {
    "file-not-utf8": (lambda t: _file(t, _LINE + b'{"custom_id":"x\xff"}\n'), ["line 2", "not valid UTF-8"]),
    "file-truncated": (lambda t: _file(t, _LINE + _LINE[:40]), ["line 2", "truncated"]),
    "file-json-array": (lambda t: _file(t, b"[" + _LINE.strip() + b"]\n"), ["line 1", "JSON array"]),
    "file-list-line": (lambda t: _file(t, _LINE + b"[1, 2]\n"), ["line 2", "got an array"]),
    "file-scalar-line": (lambda t: _file(t, _LINE + b"42\n"), ["line 2", "got a number"]),
    "file-lone-surrogate": (lambda t: _file(t, _LINE + b'{"t":"\\ud800"}\n'), ["line 2", "lone surrogate"]),
    "file-nan": (lambda t: _file(t, _LINE + b'{"t":NaN}\n'), ["line 2", "NaN or Infinity"]),
    "file-bom-mid-file": (lambda t: _file(t, _LINE + b"\xef\xbb\xbf" + _LINE), ["line 2", "byte-order mark"]),
    "missing-connection": (
        lambda t: {"requests": anthropic_rows(2), "conn_id": "no_such_conn"},
        ["connection 'no_such_conn' does not exist", "ANTHROPIC_API_KEY is not set"],
    ),
    "templated-endpoint-renders-bad": (
        lambda t: {"provider": "openai", "requests": openai_rows(2), "endpoint": "{{ '/v1/' + 'images' }}"},
        ["endpoint: must be one of", "/v1/images"],
    ),
}


@pytest.mark.parametrize("case", list(RUN_TIME))
def test_bad_input_fails_the_task_naming_it_before_any_paid_call(
    emulator, make_dag, tmp_path, capfd, caplog, case
):
    build, words = RUN_TIME[case]
    submit_kwargs = build(tmp_path)
    provider = submit_kwargs.pop("provider", "anthropic")
    requests = submit_kwargs.pop("requests", None)
    run = run_dag(make_dag(provider, requests, submit_kwargs=submit_kwargs))
    output = task_output(capfd, caplog)
    assert run.states == {"submit": "failed", "ready": "upstream_failed"}, run.states
    assert any(all(word in line for word in words) for line in output.splitlines()), (words, output[-3000:])
    assert emulator.calls() == {}
    assert emulator.billing()["usd"] == 0


def test_a_templated_sensor_argument_is_checked_once_rendered(emulator, make_dag, capfd, caplog):
    dag = make_dag("anthropic", anthropic_rows(2), sensor_kwargs={"deadline": "{{ 'not-a-date' }}"})
    run = run_dag(dag)
    output = task_output(capfd, caplog)
    assert run.states == {"submit": "success", "ready": "failed"}, run.states
    assert any("deadline: must be an ISO 8601 datetime" in line for line in output.splitlines())


def test_batch_ids_rendered_as_a_string_are_refused_not_polled_per_character(
    emulator, dag_id, state_root, capfd, caplog
):
    from airflow.sdk import DAG

    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        BatchSensor(
            task_id="ready",
            provider="anthropic",
            batch_ids="{{ 'msgbatch_01' }}",
            state_root=state_root,
            poll_interval=0.2,
        )
    run = run_dag(dag)
    output = task_output(capfd, caplog)
    assert run.states == {"ready": "failed"}, run.states
    assert any("batch_ids: must be a list of batch ids" in line for line in output.splitlines())
    assert emulator.calls() == {}


# -- templated fields that must work -----------------------------------------------------------------


def test_templated_deadline_and_endpoint_work(emulator, dag_id, state_root):
    from airflow.sdk import DAG

    deadline = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=6)).isoformat()
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"deadline": deadline, "endpoint": "/v1/chat/completions"},
    ) as dag:
        TieredInferenceOperator(
            task_id="infer",
            provider="openai",
            requests=[{k: v for k, v in row.items() if k != "url"} for row in rows_for("openai", 3)],
            endpoint="{{ params.endpoint }}",
            deadline="{{ params.deadline }}",
            tier="batch",
            state_root=state_root,
            poll_interval=0.2,
        )
    run = run_dag(dag)
    assert run.states == {"infer": "success"}, run.states
    manifest = run.xcoms["infer"]
    assert manifest["counts"]["succeeded"] == 3
    assert datetime.datetime.fromisoformat(manifest["deadline"]) == datetime.datetime.fromisoformat(deadline)


def test_a_utf8_bom_on_line_1_is_accepted(emulator, make_dag, tmp_path):
    run = run_dag(make_dag("anthropic", submit_kwargs=_file(tmp_path, b"\xef\xbb\xbf" + _LINE)))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
