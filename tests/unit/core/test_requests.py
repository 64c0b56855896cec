from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_tokentier.core.errors import JsonlFileError
from airflow_provider_tokentier.core.jsonl import JsonlLine, dumps_line, loads_line
from airflow_provider_tokentier.core.requests import (
    CUSTOM_ID_PATTERN,
    RequestValidationError,
    RequestValidator,
    ValidRequest,
    count_embedding_inputs,
    iter_valid_lines,
    iter_valid_requests,
    iter_validated,
    serialize_request,
)


def anthropic_row(i: int, **params: Any) -> dict[str, Any]:
    body = {"model": "claude-haiku-5-5", "max_tokens": 64, "messages": [{"role": "user", "content": f"q{i}"}]}
    body.update(params)
    return {"custom_id": f"doc-{i}", "params": body}


def chat_row(i: int, **body: Any) -> dict[str, Any]:
    payload = {"model": "gpt-6-luna", "messages": [{"role": "user", "content": f"q{i}"}]}
    payload.update(body)
    return {"custom_id": f"doc-{i}", "method": "POST", "url": "/v1/chat/completions", "body": payload}


def validate(rows: list[Any], provider: str, **kwargs: Any) -> list[dict[str, Any]]:
    return list(iter_validated(rows, provider, **kwargs))


def expect_error(
    rows: list[Any], provider: str, index: int, custom_id: str | None, fragment: str, **kwargs: Any
):
    with pytest.raises(RequestValidationError) as excinfo:
        validate(rows, provider, **kwargs)
    error = excinfo.value
    assert (error.index, error.custom_id) == (index, custom_id)
    assert str(error).startswith(f"request #{index} (custom_id={custom_id!r}): ")
    assert fragment in str(error)
    return error


@pytest.mark.parametrize(
    ("custom_id", "ok"),
    [
        ("a", True),
        ("A-z_0-9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("doc 1", False),
        ("doc.1", False),
        ("dóc", False),
        ("doc-1\n", False),
    ],
)
def test_custom_id_syntax(custom_id, ok):
    assert bool(CUSTOM_ID_PATTERN.fullmatch(custom_id)) is ok
    row = anthropic_row(0)
    row["custom_id"] = custom_id
    if ok:
        assert validate([row], "anthropic")[0]["custom_id"] == custom_id
    else:
        expect_error([row], "anthropic", 0, None, "must be a string matching")


def test_anthropic_rows_normalized_without_mutating_input():
    rows = [anthropic_row(0), anthropic_row(1, model=None)]
    del rows[1]["params"]["model"]
    original = copy.deepcopy(rows)
    out = validate(rows, "anthropic", default_model="claude-opus-5-5")
    assert out == [
        {"custom_id": "doc-0", "params": rows[0]["params"]},
        {"custom_id": "doc-1", "params": {**rows[1]["params"], "model": "claude-opus-5-5"}},
    ]
    assert rows == original


ANTHROPIC_ROW_ERRORS = [
    (lambda row: row.update(custom_id="bad id"), None, "must be a string matching"),
    (lambda row: row.update(custom_id=17), None, "custom_id 17"),
    (lambda row: row.pop("custom_id"), None, "custom_id is required"),
    (lambda row: row.pop("params"), "doc-2", "params is required"),
    (lambda row: row.update(params=[1]), "doc-2", "params must be an object"),
    (lambda row: row["params"].pop("model"), "doc-2", "params.model is required"),
    (lambda row: row["params"].update(model=""), "doc-2", "params.model must be a non-empty string"),
    (lambda row: row["params"].pop("max_tokens"), "doc-2", "params.max_tokens is required"),
    (lambda row: row["params"].update(max_tokens=0), "doc-2", "positive integer"),
    (lambda row: row["params"].update(max_tokens=True), "doc-2", "positive integer"),
    (lambda row: row["params"].update(max_tokens="64"), "doc-2", "positive integer"),
    (lambda row: row["params"].pop("messages"), "doc-2", "params.messages is required"),
    (lambda row: row["params"].update(messages=[]), "doc-2", "params.messages must be a non-empty list"),
    (lambda row: row["params"].update(stream=True), "doc-2", "params.stream=true is not allowed"),
    (lambda row: row.update(body={}), "doc-2", "unknown top-level key(s) ['body']"),
]


@pytest.mark.parametrize(("mutate", "custom_id", "fragment"), ANTHROPIC_ROW_ERRORS)
def test_anthropic_row_errors_name_the_row(mutate, custom_id, fragment):
    rows = [anthropic_row(i) for i in range(4)]
    mutate(rows[2])
    expect_error(rows, "anthropic", 2, custom_id, fragment)


def test_anthropic_stream_false_is_allowed():
    assert validate([anthropic_row(0, stream=False)], "anthropic")[0]["params"]["stream"] is False


def test_non_object_row_is_rejected():
    expect_error([anthropic_row(0), ["doc-1"]], "anthropic", 1, None, "must be a JSON object, got list")


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_duplicate_custom_id_names_both_rows(provider):
    make = anthropic_row if provider == "anthropic" else chat_row
    rows = [make(i) for i in range(6)]
    rows[4]["custom_id"] = "doc-1"
    error = expect_error(rows, provider, 4, "doc-1", "duplicate custom_id")
    assert "request #1" in str(error)


def test_openai_method_and_url_filled_from_endpoint():
    rows = [
        {"custom_id": "e-0", "body": {"input": "hello"}},
        {"custom_id": "e-1", "url": "/v1/embeddings", "body": {"input": ["a", "b"]}},
    ]
    out = validate(rows, "openai", endpoint="/v1/embeddings", default_model="text-embedding-4-small")
    assert out == [
        {
            "custom_id": "e-0",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"input": "hello", "model": "text-embedding-4-small"},
        },
        {
            "custom_id": "e-1",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"input": ["a", "b"], "model": "text-embedding-4-small"},
        },
    ]
    assert "model" not in rows[0]["body"]


def test_openai_endpoint_taken_from_first_row_when_not_given():
    rows = [
        chat_row(0),
        chat_row(1),
        {"custom_id": "x", "url": "/v1/responses", "body": {"model": "gpt-6-luna", "input": "q"}},
    ]
    expect_error(rows, "openai", 2, "x", "does not match the workload endpoint '/v1/chat/completions'")


OPENAI_CHAT_ROW_ERRORS = [
    (lambda row: row.update(method="GET"), "method must be 'POST'"),
    (lambda row: row.update(url="/v1/embeddings"), "does not match the workload endpoint"),
    (lambda row: row.pop("body"), "body is required"),
    (lambda row: row.update(body="{}"), "body must be an object"),
    (lambda row: row["body"].pop("model"), "body.model is required"),
    (lambda row: row["body"].pop("messages"), "body.messages is required for /v1/chat/completions"),
    (lambda row: row["body"].update(messages=[]), "body.messages must not be empty"),
    (lambda row: row["body"].update(messages="hi"), "body.messages must be a list"),
    (lambda row: row["body"].update(stream=True), "body.stream=true is not allowed"),
    (lambda row: row["body"].update(model="gpt-6-sol"), "differs from 'gpt-6-luna' used by request #0"),
    (lambda row: row.update(extra=1), "unknown top-level key(s) ['extra']"),
]


@pytest.mark.parametrize(("mutate", "fragment"), OPENAI_CHAT_ROW_ERRORS)
def test_openai_chat_row_errors_name_the_row(mutate, fragment):
    rows = [chat_row(i) for i in range(5)]
    mutate(rows[3])
    expect_error(rows, "openai", 3, "doc-3", fragment, endpoint="/v1/chat/completions")


def test_openai_mixed_models_error_names_first_differing_row():
    rows = [chat_row(i) for i in range(5)]
    rows[2]["body"]["model"] = "gpt-6-sol"
    rows[4]["body"]["model"] = "gpt-6-sol"
    expect_error(rows, "openai", 2, "doc-2", "single model")


def test_openai_default_model_counts_toward_single_model_rule():
    rows = [chat_row(0), chat_row(1)]
    del rows[0]["body"]["model"]
    rows[1]["body"]["model"] = "gpt-6-sol"
    expect_error(rows, "openai", 1, "doc-1", "differs from 'gpt-6-luna'", default_model="gpt-6-luna")


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ("/v1/embeddings", "input"),
        ("/v1/responses", "input"),
        ("/v1/completions", "prompt"),
        ("/v1/moderations", "input"),
    ],
)
def test_openai_endpoint_required_fields(endpoint, field):
    ok = {"custom_id": "a", "body": {"model": "m", field: "text"}}
    missing = {"custom_id": "b", "body": {"model": "m"}}
    assert validate([ok], "openai", endpoint=endpoint)[0]["url"] == endpoint
    expect_error(
        [ok, missing], "openai", 1, "b", f"body.{field} is required for {endpoint}", endpoint=endpoint
    )
    empty = {"custom_id": "c", "body": {"model": "m", field: ""}}
    expect_error([empty], "openai", 0, "c", "must not be empty", endpoint=endpoint)


def test_openai_url_required_without_endpoint():
    expect_error(
        [{"custom_id": "a", "body": {"model": "m", "input": "x"}}], "openai", 0, "a", "url is required"
    )


def test_openai_unknown_url_rejected_without_endpoint():
    row = {"custom_id": "a", "url": "/v1/images", "body": {"model": "m", "prompt": "x"}}
    expect_error([row], "openai", 0, "a", "not a supported batch endpoint")


@pytest.mark.parametrize(
    ("provider", "kwargs"),
    [("cohere", {}), ("openai", {"endpoint": "/v1/images"}), ("openai", {"endpoint": "v1/responses"})],
)
def test_bad_arguments_fail_at_call_time(provider, kwargs):
    with pytest.raises(ValueError, match=r"unknown provider|unsupported OpenAI batch endpoint"):
        iter_validated(iter(()), provider, **kwargs)


def test_streaming_100k_rows_lazily():
    produced = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal produced
        for i in range(100_000):
            produced += 1
            yield {"custom_id": f"r{i}", "body": {"input": f"text {i}"}}

    validated = iter_validated(
        rows(), "openai", endpoint="/v1/embeddings", default_model="text-embedding-4-small"
    )
    assert produced == 0
    first = next(validated)
    assert first["custom_id"] == "r0"
    assert produced == 1
    count = 1
    for count, row in enumerate(validated, start=2):
        # The validator never runs ahead of its consumer.
        assert produced == count
        assert row["url"] == "/v1/embeddings"
    assert count == produced == 100_000


def test_error_is_raised_when_the_bad_row_is_reached():
    rows = [anthropic_row(0), anthropic_row(1), {"custom_id": "doc-2"}]
    validated = iter_validated(rows, "anthropic")
    assert next(validated)["custom_id"] == "doc-0"
    assert next(validated)["custom_id"] == "doc-1"
    with pytest.raises(RequestValidationError, match="params is required"):
        next(validated)


def test_serialize_request_compact_and_ordered():
    [anthropic] = validate([anthropic_row(0)], "anthropic")
    line = serialize_request(anthropic, "anthropic")
    assert line.startswith(b'{"custom_id":"doc-0","params":{"model":"claude-haiku-5-5",')
    assert b" " not in line
    assert not line.endswith(b"\n")
    assert json.loads(line) == anthropic

    row = {"custom_id": "x", "url": "/v1/responses", "body": {"model": "m", "input": "héllo"}}
    [openai] = validate([row], "openai")
    line = serialize_request(openai, "openai")
    expected = '{"custom_id":"x","method":"POST","url":"/v1/responses","body":{"model":"m","input":"héllo"}}'
    assert line == expected.encode()

    with pytest.raises(ValueError, match="unknown provider 'cohere'"):
        serialize_request(openai, "cohere")


@pytest.mark.parametrize(
    ("body_input", "url", "expected"),
    [
        ("one text", "/v1/embeddings", 1),
        (["a", "b", "c"], "/v1/embeddings", 3),
        ([1, 2, 3], "/v1/embeddings", 1),  # one pre-tokenized input
        ([[1, 2], [3]], "/v1/embeddings", 2),
        ("text", "/v1/responses", 0),
    ],
)
def test_count_embedding_inputs(body_input, url, expected):
    assert count_embedding_inputs({"custom_id": "a", "url": url, "body": {"input": body_input}}) == expected


# -- JSONL lines: copied byte for byte when they can go as they are, else the row path ----------------


def jsonl(rows: list[Any]) -> list[JsonlLine]:
    return [JsonlLine(number, dumps_line(row), False) for number, row in enumerate(rows, start=1)]


def validate_lines(lines: list[JsonlLine], provider: str, **kwargs: Any) -> list[ValidRequest]:
    validator = RequestValidator(provider, **kwargs)
    return list(iter_valid_lines(validator, lines, source="requests_uri file:///r.jsonl"))


def row_path_error(rows: list[Any], provider: str, **kwargs: Any) -> RequestValidationError:
    with pytest.raises(RequestValidationError) as excinfo:
        validate(rows, provider, **kwargs)
    return excinfo.value


def test_valid_lines_are_copied_byte_for_byte():
    spaced = (
        b'{"custom_id":"doc-1",  "params": {"max_tokens": 64, "model": "m",'
        b' "messages": [{"role": "user", "content": "\\u00e9"}]}}'
    )
    lines = [*jsonl([anthropic_row(0)]), JsonlLine(2, spaced, False)]
    out = validate_lines(lines, "anthropic")
    assert [request.line for request in out] == [line.data for line in lines]
    assert [(r.custom_id, r.model, r.url, r.embedding_inputs) for r in out] == [
        ("doc-0", "claude-haiku-5-5", None, 0),
        ("doc-1", "m", None, 0),
    ]
    chat = jsonl([chat_row(0), chat_row(1)])
    assert [r.line for r in validate_lines(chat, "openai")] == [line.data for line in chat]


def test_a_line_needing_a_default_or_a_field_is_re_encoded_normalized():
    no_model = anthropic_row(1)
    del no_model["params"]["model"]
    lines = [
        *jsonl([anthropic_row(0), no_model]),
        JsonlLine(
            3, b'  {"custom_id":"doc-2","params":{"model":"m","max_tokens":1,"messages":[1]}}\r', False
        ),
        # Anthropic wire ids are spliced in after a leading custom_id: other key orders are re-encoded.
        JsonlLine(4, b'{"params":{"model":"m","max_tokens":1,"messages":[1]},"custom_id":"doc-3"}', False),
    ]
    out = validate_lines(lines, "anthropic", default_model="claude-opus-5-5")
    assert out[0].line == lines[0].data
    expected = [
        {"custom_id": "doc-1", "params": {**no_model["params"], "model": "claude-opus-5-5"}},
        {"custom_id": "doc-2", "params": {"model": "m", "max_tokens": 1, "messages": [1]}},
        {"custom_id": "doc-3", "params": {"model": "m", "max_tokens": 1, "messages": [1]}},
    ]
    assert [r.line for r in out[1:]] == [serialize_request(row, "anthropic") for row in expected]
    assert out[1].model == "claude-opus-5-5"

    embeddings = jsonl([{"custom_id": "e-0", "body": {"model": "m", "input": ["a", "b", "c"]}}])
    (request,) = validate_lines(embeddings, "openai", endpoint="/v1/embeddings")
    assert loads_line(request.line) == {
        "custom_id": "e-0",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "m", "input": ["a", "b", "c"]},
    }
    assert (request.url, request.embedding_inputs) == ("/v1/embeddings", 3)


def test_embedding_inputs_are_counted_on_copied_lines():
    rows = [
        {
            "custom_id": f"e-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "m", "input": value},
        }
        for i, value in enumerate(["a", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
    ]
    lines = jsonl(rows)
    out = validate_lines(lines, "openai")
    assert [r.line for r in out] == [line.data for line in lines]
    assert [r.embedding_inputs for r in out] == [count_embedding_inputs(row) for row in rows] == [1, 2, 1, 2]


def test_a_line_with_two_custom_id_keys_goes_out_with_the_one_it_was_validated_under():
    line = b'{"custom_id":"a","custom_id":"b","params":{"model":"m","max_tokens":1,"messages":[1]}}'
    (request,) = validate_lines([JsonlLine(1, line, False)], "anthropic")
    assert (request.custom_id, loads_line(request.line)["custom_id"]) == ("b", "b")
    assert request.line.count(b'"custom_id"') == 1


@pytest.mark.parametrize(("mutate", "custom_id", "fragment"), ANTHROPIC_ROW_ERRORS)
def test_anthropic_line_errors_are_the_row_errors(mutate, custom_id, fragment):
    rows = [anthropic_row(i) for i in range(4)]
    mutate(rows[2])
    with pytest.raises(RequestValidationError) as excinfo:
        validate_lines(jsonl(rows), "anthropic")
    assert str(excinfo.value) == str(row_path_error(rows, "anthropic"))
    assert (excinfo.value.index, excinfo.value.custom_id) == (2, custom_id)
    assert fragment in str(excinfo.value)


@pytest.mark.parametrize(("mutate", "fragment"), OPENAI_CHAT_ROW_ERRORS)
def test_openai_line_errors_are_the_row_errors(mutate, fragment):
    rows = [chat_row(i) for i in range(5)]
    mutate(rows[3])
    with pytest.raises(RequestValidationError) as excinfo:
        validate_lines(jsonl(rows), "openai")
    assert str(excinfo.value) == str(row_path_error(rows, "openai"))
    assert fragment in str(excinfo.value)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_duplicate_custom_id_on_copied_lines_names_both_rows(provider):
    make = anthropic_row if provider == "anthropic" else chat_row
    rows = [make(i) for i in range(6)]
    rows[4]["custom_id"] = "doc-1"
    with pytest.raises(
        RequestValidationError,
        match=r"^request #4 \(custom_id='doc-1'\): duplicate custom_id, already used by request #1$",
    ):
        validate_lines(jsonl(rows), provider)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            b'{"custom_id":"a","params":{"model":"m","max_tokens":1,"messages":[1],"t":NaN}}',
            "NaN or Infinity",
        ),
        (b'{"custom_id":"a","params":{"model":"m","max_tokens":1,"messages":["\\ud800"]}}', "lone surrogate"),
        (
            b'{"custom_id":"a","params":{"model":"m","max_tokens":1,"messages":[1],"t":"\xff"}}',
            "not valid UTF-8",
        ),
        (
            b'{"custom_id":"a","params":{"model":"m","max_tokens":1,"messages":[1],"t":1e999}}',
            "not valid JSON",
        ),
    ],
)
def test_a_line_json_cannot_carry_fails_as_a_file_error(data, fragment):
    with pytest.raises(JsonlFileError, match=rf"^requests_uri file:///r.jsonl line 2: .*{fragment}"):
        validate_lines([*jsonl([anthropic_row(0)]), JsonlLine(2, data, False)], "anthropic")


def test_unsendable_python_values_are_still_refused_with_their_path():
    row = anthropic_row(0, temperature=float("nan"))
    with pytest.raises(RequestValidationError, match=r"params.temperature is nan; JSON carries only finite"):
        list(iter_valid_requests(RequestValidator("anthropic"), [row]))
