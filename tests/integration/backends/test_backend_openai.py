"""OpenAIBatchBackend through the real ``openai`` SDK against the emulator."""

from __future__ import annotations

import collections
import logging

import pytest

from airflow_provider_tokentier.backends import BatchNotEndedError, OpenAIBatchBackend
from airflow_provider_tokentier.testing import Emulator
from tests.integration.backends.conftest import OPENAI_MODEL, openai_row


def test_submit_retrieve_and_outcomes(emu: Emulator, openai_backend: OpenAIBatchBackend, write_chunk):
    ids = [f"req-{i}" for i in range(25)]
    path = write_chunk(openai_row(i) for i in ids)

    batch_id = openai_backend.submit(path, request_count=25, tag={"tokentier": "t1", "chunk": "0"})

    [batch] = emu.batches()["openai"]
    assert batch["id"] == batch_id
    status = openai_backend.retrieve(batch_id)
    assert status.provider == "openai"
    assert status.phase in ("validating", "running")
    assert not status.ended
    with pytest.raises(BatchNotEndedError):
        list(openai_backend.iter_outcomes(batch_id))

    emu.advance(3 * 3600)
    status = openai_backend.retrieve(batch_id)
    assert (status.status, status.phase, status.ended, status.total) == ("completed", "ended", True, 25)
    assert status.counts == {"processing": 0, "succeeded": 25, "errored": 0, "expired": 0, "canceled": 0}
    assert status.failure is None

    outcomes = list(openai_backend.iter_outcomes(batch_id))
    assert sorted(o.custom_id for o in outcomes) == sorted(ids)
    for outcome in outcomes:
        assert outcome.status == "succeeded"
        assert outcome.error is None
        assert outcome.response is not None
        assert outcome.response["object"] == "chat.completion"
        assert outcome.model is not None
        assert outcome.model.startswith(OPENAI_MODEL)
        assert outcome.usage.input_tokens + outcome.usage.cache_read_tokens > 0
        assert outcome.usage.output_tokens > 0


def test_endpoint_is_taken_from_the_first_line(
    emu: Emulator, openai_backend: OpenAIBatchBackend, write_chunk
):
    rows = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-4-small", "input": f"text {i}"},
        }
        for i in range(3)
    ]
    batch_id = openai_backend.submit(write_chunk(rows), request_count=3, tag={})
    [batch] = emu.batches()["openai"]
    assert (batch["id"], batch["endpoint"]) == (batch_id, "/v1/embeddings")


def test_expiry_keeps_partial_output(emu: Emulator, openai_backend: OpenAIBatchBackend, write_chunk):
    emu.configure(expire_rate=0.3)
    ids = [f"x{i}" for i in range(60)]
    batch_id = openai_backend.submit(write_chunk(openai_row(i) for i in ids), request_count=60, tag={})

    emu.advance(25 * 3600)

    status = openai_backend.retrieve(batch_id)
    assert (status.status, status.ended) == ("expired", True)
    outcomes = list(openai_backend.iter_outcomes(batch_id))
    assert sorted(o.custom_id for o in outcomes) == sorted(ids)
    by_status = collections.Counter(o.status for o in outcomes)
    assert by_status["succeeded"] > 0
    assert by_status["expired"] > 0
    assert by_status["succeeded"] + by_status["expired"] == 60
    assert status.counts["expired"] == by_status["expired"]
    assert status.counts["succeeded"] == by_status["succeeded"]
    expired = next(o for o in outcomes if o.status == "expired")
    assert expired.error is not None
    assert (expired.error["type"], expired.error["retryable"]) == ("batch_expired", True)


def test_errored_lines_carry_type_and_retryable(
    emu: Emulator, openai_backend: OpenAIBatchBackend, write_chunk
):
    emu.configure(error_rate=0.4)
    rows = [openai_row(f"ok{i}") for i in range(30)]
    rows.append(openai_row("bad", messages="not a list"))
    batch_id = openai_backend.submit(write_chunk(rows), request_count=len(rows), tag={})
    emu.advance(3 * 3600)

    status = openai_backend.retrieve(batch_id)
    outcomes = {o.custom_id: o for o in openai_backend.iter_outcomes(batch_id)}

    assert status.status == "completed"
    assert len(outcomes) == 31
    bad = outcomes["bad"]
    assert bad.status == "errored"
    assert bad.error is not None
    assert (bad.error["type"], bad.error["retryable"]) == ("invalid_request_error", False)
    server_errors = [o for o in outcomes.values() if o.status == "errored" and o.custom_id != "bad"]
    assert server_errors, "error_rate=0.4 should produce some errored requests"
    for outcome in server_errors:
        assert outcome.error is not None
        assert outcome.error["retryable"] is True
    assert status.counts["errored"] == len(server_errors) + 1


def test_cancel_gives_canceled_outcomes_and_is_idempotent(
    emu: Emulator, openai_backend: OpenAIBatchBackend, write_chunk
):
    emu.configure(batch_turnaround_s=4 * 3600, cancel_latency_s=60)
    ids = [f"c{i}" for i in range(40)]
    batch_id = openai_backend.submit(write_chunk(openai_row(i) for i in ids), request_count=40, tag={})
    emu.advance(600)

    openai_backend.cancel(batch_id)
    assert openai_backend.retrieve(batch_id).phase in ("canceling", "ended")
    openai_backend.cancel(batch_id)  # still cancelling: harmless
    emu.advance(600)
    status = openai_backend.retrieve(batch_id)
    assert (status.status, status.ended) == ("cancelled", True)
    openai_backend.cancel(batch_id)  # already ended: not an error

    outcomes = list(openai_backend.iter_outcomes(batch_id))
    assert sorted(o.custom_id for o in outcomes) == sorted(ids)
    canceled = [o for o in outcomes if o.status == "canceled"]
    assert canceled
    assert canceled[0].error is not None
    assert canceled[0].error["type"] == "batch_cancelled"
    assert status.counts["canceled"] == len(canceled)


def test_find_submitted_by_tag(emu: Emulator, openai_backend: OpenAIBatchBackend, write_chunk):
    before = emu.now()
    mine = openai_backend.submit(
        write_chunk(openai_row(f"a{i}") for i in range(3)), request_count=3, tag={"tt": "run-1", "chunk": "0"}
    )
    openai_backend.submit(
        write_chunk(openai_row(f"b{i}") for i in range(3)), request_count=3, tag={"tt": "run-1", "chunk": "1"}
    )
    openai_backend.submit(write_chunk(openai_row(f"c{i}") for i in range(3)), request_count=3, tag={})

    found = openai_backend.find_submitted(
        {"tt": "run-1", "chunk": "0"}, created_after=before - 1, request_count=3
    )
    assert found == [mine]
    assert len(openai_backend.find_submitted({"tt": "run-1"}, created_after=before - 1, request_count=3)) == 2
    assert (
        openai_backend.find_submitted(
            {"tt": "run-1", "chunk": "0"}, created_after=emu.now() + 60, request_count=3
        )
        == []
    )


def test_find_submitted_pages_through_listing(emu: Emulator, openai_backend: OpenAIBatchBackend, write_chunk):
    before = emu.now()
    path = write_chunk(openai_row(f"p{i}") for i in range(1))
    ids = [openai_backend.submit(path, request_count=1, tag={"n": str(n)}) for n in range(105)]
    assert openai_backend.find_submitted({"n": "0"}, created_after=before - 1, request_count=1) == [ids[0]]


def test_failed_batch_reports_failure_and_yields_nothing(
    emu: Emulator, openai_backend: OpenAIBatchBackend, write_chunk
):
    rows = [openai_row("m1"), openai_row("m2", model="gpt-6-sol")]
    batch_id = openai_backend.submit(write_chunk(rows), request_count=2, tag={})
    emu.advance(3600)

    status = openai_backend.retrieve(batch_id)

    assert (status.status, status.phase, status.ended) == ("failed", "ended", True)
    assert status.failure is not None
    assert ": " in status.failure
    assert status.to_dict()["failure"] == status.failure
    assert list(openai_backend.iter_outcomes(batch_id)) == []


def test_token_limit_failure(emu: Emulator, openai_backend: OpenAIBatchBackend, write_chunk):
    emu.configure(enqueued_token_limit=10)
    batch_id = openai_backend.submit(
        write_chunk(openai_row(f"t{i}") for i in range(5)), request_count=5, tag={}
    )
    emu.advance(3600)
    status = openai_backend.retrieve(batch_id)
    assert status.status == "failed"
    assert status.failure is not None
    assert status.failure.startswith("token_limit_exceeded: ")


def test_outcomes_survive_flaky_status_and_content_calls(
    caplog: pytest.LogCaptureFixture, emu: Emulator, openai_backend: OpenAIBatchBackend, write_chunk
):
    emu.configure(error_rate=0.2)
    ids = [f"f{i}" for i in range(50)]
    batch_id = openai_backend.submit(write_chunk(openai_row(i) for i in ids), request_count=50, tag={})
    emu.advance(3 * 3600)
    assert openai_backend.retrieve(batch_id).ended
    emu.configure(poll_error_rate=0.2)

    with caplog.at_level(logging.WARNING, logger="airflow_provider_tokentier.backends"):
        # Several full downloads, each checked, so the seeded fault sequence is sure to be hit.
        for _ in range(4):
            outcomes = list(openai_backend.iter_outcomes(batch_id))
            assert sorted(o.custom_id for o in outcomes) == sorted(ids)
    assert "retrying" in caplog.text  # the emulator's draws are seeded: this run does hit faults


def test_bad_metadata_is_refused(openai_backend: OpenAIBatchBackend, write_chunk):
    path = write_chunk([openai_row("a")])
    with pytest.raises(ValueError, match="metadata"):
        openai_backend.submit(path, request_count=1, tag={f"k{i}": "v" for i in range(17)})
