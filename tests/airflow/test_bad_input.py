"""Bad input of every kind: a clear error naming the row, and not one paid call."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from airflow_provider_tokentier.operators import BatchSubmitOperator
from airflow_provider_tokentier.sensors import BatchSensor
from tests.airflow.helpers import OPENAI_MODEL, anthropic_rows, openai_rows, paid_calls, run_dag, task_output


def _bad(provider: str, mutate: Any) -> list[dict[str, Any]]:
    rows = copy.deepcopy(anthropic_rows(5) if provider == "anthropic" else openai_rows(5))
    mutate(rows)
    return rows


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(rows: list[dict[str, Any]]) -> None:
        target: Any = rows
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return mutate


_DELETE = object()

# (provider, rows, words the error must contain -- the row number and what is wrong)
ROW_CASES = {
    "bad-custom-id": (
        "anthropic",
        _bad("anthropic", _set((2, "custom_id"), "doc 2/with spaces")),
        ["#2", "custom_id"],
    ),
    "long-custom-id": ("openai", _bad("openai", _set((1, "custom_id"), "x" * 65)), ["#1", "custom_id"]),
    "duplicate-custom-id": (
        "anthropic",
        _bad("anthropic", _set((3, "custom_id"), "a-0001")),
        ["#3", "a-0001", "duplicate"],
    ),
    "duplicate-custom-id-openai": (
        "openai",
        _bad("openai", _set((4, "custom_id"), "o-0000")),
        ["#4", "o-0000", "duplicate"],
    ),
    "stream-true-anthropic": (
        "anthropic",
        _bad("anthropic", _set((1, "params", "stream"), True)),
        ["#1", "a-0001", "stream"],
    ),
    "stream-true-openai": (
        "openai",
        _bad("openai", _set((2, "body", "stream"), True)),
        ["#2", "o-0002", "stream"],
    ),
    "missing-messages-anthropic": (
        "anthropic",
        _bad("anthropic", _set((4, "params", "messages"), _DELETE)),
        ["#4", "a-0004", "messages"],
    ),
    "missing-messages-openai": (
        "openai",
        _bad("openai", _set((3, "body", "messages"), _DELETE)),
        ["#3", "o-0003", "messages"],
    ),
    "missing-max-tokens": (
        "anthropic",
        _bad("anthropic", _set((2, "params", "max_tokens"), _DELETE)),
        ["#2", "a-0002", "max_tokens"],
    ),
    "mixed-openai-models": (
        "openai",
        _bad("openai", _set((3, "body", "model"), OPENAI_MODEL + "-mini")),
        ["#3", "o-0003", "model"],
    ),
    "wrong-url": ("openai", _bad("openai", _set((2, "url"), "/v1/embeddings")), ["#2", "o-0002", "url"]),
    "unsupported-url": (
        "openai",
        _bad("openai", _set((0, "url"), "/v1/images/generations")),
        ["#0", "o-0000", "url"],
    ),
    "wrong-method": ("openai", _bad("openai", _set((1, "method"), "GET")), ["#1", "o-0001", "method"]),
    "unknown-key": ("anthropic", _bad("anthropic", _set((1, "body"), {})), ["#1", "a-0001", "body"]),
    "row-not-object": ("anthropic", _bad("anthropic", _set((2,), "just a string")), ["#2", "object"]),
    "bad-last-row": (
        "anthropic",
        _bad("anthropic", lambda rows: rows.append({"custom_id": "z", "params": {}})),
        ["#5", "'z'"],
    ),
}


@pytest.mark.parametrize("case", list(ROW_CASES), ids=list(ROW_CASES))
def test_bad_row_fails_submit_naming_the_row_with_zero_paid_calls(emulator, make_dag, capfd, caplog, case):
    provider, rows, words = ROW_CASES[case]
    run = run_dag(make_dag(provider, rows))
    output = task_output(capfd, caplog)

    assert run.states == {"submit": "failed", "ready": "upstream_failed"}, run.states
    errors = [line for line in output.splitlines() if "RequestValidationError" in line]
    assert errors, output[-3000:]
    assert any(all(word in line for word in words) for line in errors), (words, errors)
    assert paid_calls(emulator.calls()) == {}
    assert emulator.calls() == {}
    assert emulator.billing()["usd"] == 0


def test_bad_row_in_requests_uri_file(emulator, make_dag, capfd, caplog, tmp_path):
    rows = anthropic_rows(5)
    rows[3]["params"]["max_tokens"] = 0
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = run_dag(make_dag("anthropic", submit_kwargs={"requests_uri": f"file://{path}"}))
    output = task_output(capfd, caplog)
    assert run.states["submit"] == "failed", run.states
    assert any("#3" in line and "a-0003" in line and "max_tokens" in line for line in output.splitlines())
    assert emulator.calls() == {}
    assert emulator.billing()["usd"] == 0


@pytest.mark.parametrize(
    "requests", [{"custom_id": "a", "params": {}}, "not rows", 42], ids=["dict", "str", "int"]
)
def test_non_list_requests_fail_with_zero_paid_calls(emulator, make_dag, capfd, caplog, requests):
    run = run_dag(make_dag("anthropic", requests))
    output = task_output(capfd, caplog)
    assert run.states["submit"] == "failed", run.states
    # No row to name: the error must say what `requests` should be (a string is not a list of rows,
    # whatever it holds -- e.g. a JSON text or a URI meant for `requests_uri`).
    assert (
        "requests` must be a list of request rows" in output
        or "requests: must be a list of request rows" in output
    ), output[-2000:]
    assert emulator.calls() == {}
    assert emulator.billing()["usd"] == 0


def test_empty_workload_fails_with_zero_paid_calls(emulator, make_dag, capfd, caplog):
    run = run_dag(make_dag("openai", []))
    output = task_output(capfd, caplog)
    assert run.states["submit"] == "failed", run.states
    assert "no requests" in output
    assert emulator.calls() == {}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"provider": "mistral", "requests": []}, ["provider", "mistral"]),
        ({"provider": "anthropic", "requests": [], "requests_uri": "file:///tmp/x.jsonl"}, ["exactly one"]),
        ({"provider": "anthropic"}, ["exactly one"]),
        ({"provider": "openai", "requests": [], "endpoint": "/v1/images"}, ["endpoint", "/v1/images"]),
        ({"provider": "openai", "requests": [], "max_requests_per_batch": 0}, ["max_requests_per_batch"]),
        ({"provider": "openai", "requests": [], "safety_margin": 1.5}, ["safety_margin"]),
    ],
    ids=["unknown-provider", "both-inputs", "neither-input", "bad-endpoint", "zero-cap", "bad-margin"],
)
def test_bad_operator_arguments_fail_at_parse_time(emulator, kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words[0])) as raised:
        BatchSubmitOperator(task_id="submit", **kwargs)
    assert all(word in str(raised.value) for word in words), str(raised.value)
    assert emulator.calls() == {}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"submission": {"batches": []}, "rebatch": "everything"}, ["rebatch", "everything"]),
        ({}, ["submission"]),
        ({"submission": {"batches": []}, "batch_ids": ["b"], "provider": "openai"}, ["submission"]),
        ({"batch_ids": ["b"], "provider": "mistral"}, ["provider", "mistral"]),
        ({"submission": {"batches": []}, "max_rounds": 0}, ["max_rounds"]),
        ({"submission": {"batches": []}, "deadline": "tomorrow-ish"}, ["deadline", "tomorrow-ish"]),
        ({"submission": {"batches": []}, "poll_interval": 0}, ["poll_interval"]),
    ],
    ids=[
        "bad-rebatch",
        "no-input",
        "both-inputs",
        "unknown-provider",
        "zero-rounds",
        "bad-deadline",
        "zero-poll",
    ],
)
def test_bad_sensor_arguments_fail_at_parse_time(emulator, kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words[0])) as raised:
        BatchSensor(task_id="ready", **kwargs)
    assert all(word in str(raised.value) for word in words), str(raised.value)
    assert emulator.calls() == {}
