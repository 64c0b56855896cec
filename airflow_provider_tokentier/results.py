"""Read landed result rows: ``read_results(manifest_or_uri)`` yields one dict per request."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from airflow_provider_tokentier.core.jsonl import loads_line
from airflow_provider_tokentier.core.records import check_schema_version
from airflow_provider_tokentier.state.blockio import iter_lines
from airflow_provider_tokentier.state.ledger import storage_path


def read_results(manifest_or_uri: Mapping[str, Any] | str) -> Iterator[dict[str, Any]]:
    """Stream the result rows of a results manifest (or of a results JSONL URI).

    Rows follow the result-row contract (README, "BatchSensor"): ``custom_id``, ``status``,
    ``tier``, ``provider``, ``model``, ``batch_id``, ``round``, ``response``, ``error``,
    ``usage``, ``cost_usd``, ``standard_cost_usd``. Streaming: memory holds one row at a time.
    """
    if isinstance(manifest_or_uri, str):
        uri = manifest_or_uri
    else:
        check_schema_version(manifest_or_uri, "results manifest")
        uri = manifest_or_uri["results_uri"]
    for line in iter_lines(storage_path(uri)):
        yield loads_line(line)
