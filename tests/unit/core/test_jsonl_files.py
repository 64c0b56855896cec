"""Requests files that are not one JSON object per line: every one refused naming the line and why."""

from __future__ import annotations

import json

import pytest

from airflow_provider_tokentier.core.jsonl import JsonlFileError, iter_jsonl_objects
from airflow_provider_tokentier.core.requests import RequestValidationError, iter_validated

GOOD = b'{"custom_id":"a","params":{"max_tokens":5}}\n'


def decode(data: bytes, block: int = 7) -> list[dict]:
    """Decode ``data`` fed in small blocks, so lines straddle block boundaries."""
    blocks = [data[i : i + block] for i in range(0, len(data), block)]
    return list(iter_jsonl_objects(blocks, source="requests_uri file:///r.jsonl"))


# (file bytes, line number named, words the reason must hold)
BAD_FILES = {
    "not-utf8": (GOOD + b'{"custom_id":"b","x":"caf\xe9"}\n', 2, ["not valid UTF-8", "0xe9", "column 26"]),
    "utf16": ('{"custom_id":"a"}\n'.encode("utf-16"), 1, ["UTF-16"]),
    "bom-past-line-1": (GOOD + b"\xef\xbb\xbf" + GOOD, 2, ["byte-order mark", "concatenated"]),
    "truncated-last-line": (GOOD + GOOD + b'{"custom_id":"c","par', 3, ["truncated"]),
    "json-array": (b"[" + GOOD.strip() + b",\n" + GOOD.strip() + b"]\n", 1, ["JSON array", "JSONL"]),
    "json-array-one-line": (b"[" + GOOD.strip() + b"]\n", 1, ["JSON array", "JSONL"]),
    "pretty-printed": (b'{\n  "custom_id": "a"\n}\n', 1, ["one line"]),
    "list-line": (GOOD + b'["a", 1]\n', 2, ["got an array"]),
    "string-line": (GOOD + GOOD + b'"just text"\n', 3, ["got a string"]),
    "number-line": (GOOD + b"42\n", 2, ["got a number"]),
    "null-line": (GOOD + b"null\n", 2, ["got null"]),
    "lone-surrogate": (GOOD + b'{"custom_id":"b","t":"x\\ud800y"}\n', 2, ["lone surrogate", "\\ud800"]),
    "lone-low-surrogate": (b'{"t":"ab\\udc00"}\n', 1, ["lone surrogate", "\\udc00"]),
    "nan-literal": (GOOD + b'{"custom_id":"b","temperature":NaN}\n', 2, ["NaN or Infinity"]),
    "infinity-literal": (b'{"custom_id":"b","temperature":-Infinity}\n', 1, ["NaN or Infinity"]),
    "broken-json": (GOOD + b'{"custom_id":"b",,}\n', 2, ["not valid JSON"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_names_the_line_and_the_problem(case):
    data, line, words = BAD_FILES[case]
    with pytest.raises(JsonlFileError) as raised:
        decode(data)
    error = raised.value
    assert error.line == line, str(error)
    assert str(error).startswith(f"requests_uri file:///r.jsonl line {line}: "), str(error)
    for word in words:
        assert word in error.reason, (word, error.reason)


def test_utf8_bom_on_line_1_is_accepted():
    assert decode(b"\xef\xbb\xbf" + GOOD + GOOD) == [json.loads(GOOD)] * 2


def test_blank_lines_count_in_line_numbers_and_are_skipped():
    with pytest.raises(JsonlFileError) as raised:
        decode(GOOD + b"\n   \n" + GOOD + b"[1]\n")
    assert raised.value.line == 5


def test_surrogate_pairs_and_a_missing_final_newline_are_fine():
    data = GOOD + b'{"t":"\\ud83d\\ude00 NaN Infinity"}'
    assert decode(data, block=3)[1] == {"t": "\U0001f600 NaN Infinity"}


def _anthropic(**params):
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **params}
    return {"custom_id": "doc-1", "params": body}


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"temperature": float("nan")}, ["#1", "params.temperature", "nan"]),
        ({"top_p": float("inf")}, ["#1", "params.top_p", "inf"]),
        ({"metadata": {"weights": [1.0, float("-inf")]}}, ["params.metadata.weights[1]", "-inf"]),
        ({"system": "ok\udfff"}, ["params.system", "lone surrogate"]),
        ({"stop_sequences": object()}, ["params", "JSON cannot carry"]),
    ],
    ids=["nan", "inf", "nested-inf", "surrogate", "unencodable"],
)
def test_rows_with_values_json_cannot_carry_are_refused_naming_row_and_field(params, words):
    rows = [{**_anthropic(), "custom_id": "doc-0"}, _anthropic(**params)]
    with pytest.raises(RequestValidationError) as raised:
        list(iter_validated(rows, "anthropic"))
    assert raised.value.index == 1
    assert raised.value.custom_id == "doc-1"
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))


def test_null_values_and_the_word_null_are_not_mistaken_for_nan():
    row = _anthropic(temperature=None, system="nullable null")
    (validated,) = iter_validated([row], "anthropic")
    assert validated["params"]["system"] == "nullable null"
