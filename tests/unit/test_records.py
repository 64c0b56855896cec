"""Manifests and ledger records carry a schema version, and files from before it still read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.core.errors import SchemaVersionError
from airflow_provider_tokentier.core.records import (
    SCHEMA_VERSION,
    IntentRecord,
    ResultsManifest,
    SubmissionManifest,
    SubmittedBatch,
    check_schema_version,
)
from airflow_provider_tokentier.core.result_rows import ResultTally
from airflow_provider_tokentier.results import read_results
from airflow_provider_tokentier.state.ledger import Ledger
from airflow_provider_tokentier.workflow.submission import Workload

V0 = Path(__file__).parent.parent / "fixtures" / "schema_v0"


def _json(name: str) -> dict:
    return json.loads((V0 / name).read_text())


def _ledger(tmp_path: Path, folder: str) -> Ledger:
    state_dir = tmp_path / folder
    shutil.copytree(V0 / folder, state_dir / "ledger")
    return Ledger(ObjectStoragePath(f"file://{state_dir}"))


def test_old_submission_manifest_reads_and_writes_back_with_a_version():
    old = _json("submission_manifest.json")
    assert "schema_version" not in old
    manifest = SubmissionManifest.from_dict(old)
    assert manifest.batches[0].id == old["batches"][0]["id"]
    # Keys added since, without a version bump (optional, null when absent): the spend cap and
    # the task scope of the custom_ids sent.
    assert manifest.to_dict() == {
        **old,
        "batches": [{**batch, "id_scope": None} for batch in old["batches"]],
        "max_cost_usd": None,
        "estimated_cost_usd": None,
        "schema_version": SCHEMA_VERSION,
    }


def test_old_results_manifest_reads_and_writes_back_with_a_version():
    old = _json("results_manifest.json")
    manifest = ResultsManifest.from_dict(old)
    assert manifest.counts["succeeded"] == 3
    # Keys added since, without a version bump (optional, null or empty when absent).
    assert manifest.to_dict() == {
        **old,
        "budget": None,
        "dropped_results": None,
        "disowned_batches": [],
        "schema_version": SCHEMA_VERSION,
    }


def test_old_submit_ledger_reads_as_typed_records(tmp_path):
    ledger = _ledger(tmp_path, "ledger")
    submitted = SubmittedBatch.from_dict(ledger.submitted(0, 0))
    intent = IntentRecord.from_dict(ledger.intent(0, 0))
    workload = Workload.from_dict(ledger.read("workload"))
    manifest = _json("submission_manifest.json")

    assert submitted.to_dict() == {**manifest["batches"][0], "id_scope": None}
    assert intent.requests == submitted.requests == workload.total == 3
    assert intent.tag["tokentier_workload"] == workload.fingerprint == manifest["fingerprint"]
    assert [b["id"] for b in ledger.batches()] == [submitted.id]


def test_old_sensor_ledger_rebuilds_the_landed_totals(tmp_path):
    ledger = _ledger(tmp_path, "sensor_ledger")
    landed = ledger.read("landed")
    assert landed == _json("results_manifest.json")
    tally = ResultTally()
    for name in ledger.names("harvest-"):
        tally.merge(ledger.read(name))
    assert (tally.total, tally.cost_usd(), tally.standard_cost_usd()) == (
        landed["total"],
        landed["cost_usd"],
        landed["standard_cost_usd"],
    )
    assert ledger.read("deadline") == {"at": None}


def test_ledger_stamps_the_version_and_hands_records_back_without_it(tmp_path):
    ledger = Ledger(ObjectStoragePath(f"file://{tmp_path}"))
    ledger.write("deadline", {"at": 12.5})
    on_disk = json.loads((tmp_path / "ledger" / "deadline.json").read_text())
    assert on_disk == {"at": 12.5, "schema_version": SCHEMA_VERSION}
    assert ledger.read("deadline") == {"at": 12.5}


def test_a_record_from_a_newer_version_is_refused(tmp_path):
    newer = SCHEMA_VERSION + 1
    (tmp_path / "ledger").mkdir()
    (tmp_path / "ledger" / "landed.json").write_text(json.dumps({"schema_version": newer}))
    with pytest.raises(SchemaVersionError, match=f"schema_version {newer}, newer than"):
        Ledger(ObjectStoragePath(f"file://{tmp_path}")).read("landed")
    with pytest.raises(SchemaVersionError, match="results manifest"):
        list(read_results({**_json("results_manifest.json"), "schema_version": newer}))
    with pytest.raises(SchemaVersionError, match="submission manifest"):
        SubmissionManifest.from_dict({**_json("submission_manifest.json"), "schema_version": newer})


@pytest.mark.parametrize("version", [-1, "1", True, 1.0])
def test_a_malformed_version_is_refused(version):
    with pytest.raises(SchemaVersionError, match="must be a non-negative integer"):
        check_schema_version({"schema_version": version}, "record")
