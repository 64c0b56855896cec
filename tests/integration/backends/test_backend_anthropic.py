"""AnthropicBatchBackend through the real ``anthropic`` SDK against the emulator."""

from __future__ import annotations

import collections
import logging

import pytest

from airflow_provider_tokentier.backends import AnthropicBatchBackend, BatchNotEndedError, BatchStatus
from airflow_provider_tokentier.testing import Emulator
from tests.integration.backends.conftest import anthropic_row

DAY = 24 * 3600


def test_submit_retrieve_and_outcomes(emu: Emulator, anthropic_backend: AnthropicBatchBackend, write_chunk):
    ids = [f"req-{i}" for i in range(25)]
    path = write_chunk(anthropic_row(i) for i in ids)

    batch_id = anthropic_backend.submit(path, request_count=len(ids), tag={"run": "r1"})

    assert batch_id.startswith("msgbatch_")
    assert len(emu.batches()["anthropic"]) == 1
    status = anthropic_backend.retrieve(batch_id)
    assert (status.provider, status.phase, status.ended, status.total) == ("anthropic", "running", False, 25)
    assert status.counts["processing"] == 25
    assert BatchStatus.from_dict(status.to_dict()) == status
    with pytest.raises(BatchNotEndedError):
        list(anthropic_backend.iter_outcomes(batch_id))

    emu.advance(3 * 3600)
    status = anthropic_backend.retrieve(batch_id)
    assert (status.status, status.phase, status.ended) == ("ended", "ended", True)
    assert status.counts["succeeded"] == 25

    outcomes = list(anthropic_backend.iter_outcomes(batch_id))
    assert sorted(o.custom_id for o in outcomes) == sorted(ids)
    for outcome in outcomes:
        assert outcome.status == "succeeded"
        assert outcome.error is None
        assert outcome.response is not None
        assert outcome.response["type"] == "message"
        assert outcome.model is not None
        assert outcome.model.startswith("claude-haiku-4-5")
        assert outcome.usage.input_tokens > 0
        assert outcome.usage.output_tokens > 0


def test_request_count_mismatch_is_refused_before_sending(
    emu: Emulator, anthropic_backend: AnthropicBatchBackend, write_chunk
):
    path = write_chunk(anthropic_row(f"r{i}") for i in range(3))
    with pytest.raises(ValueError, match="request_count"):
        anthropic_backend.submit(path, request_count=4, tag={})
    assert emu.batches()["anthropic"] == []


def test_expiry_gives_succeeded_and_expired(
    emu: Emulator, anthropic_backend: AnthropicBatchBackend, write_chunk
):
    emu.configure(expire_rate=0.3)
    ids = [f"e{i}" for i in range(60)]
    batch_id = anthropic_backend.submit(write_chunk(anthropic_row(i) for i in ids), request_count=60, tag={})

    emu.advance(25 * 3600)

    status = anthropic_backend.retrieve(batch_id)
    assert status.ended
    outcomes = list(anthropic_backend.iter_outcomes(batch_id))
    assert sorted(o.custom_id for o in outcomes) == sorted(ids)
    by_status = collections.Counter(o.status for o in outcomes)
    assert by_status["succeeded"] > 0
    assert by_status["expired"] > 0
    assert by_status["succeeded"] + by_status["expired"] == 60
    assert status.counts["expired"] == by_status["expired"]
    expired = next(o for o in outcomes if o.status == "expired")
    assert expired.response is None
    assert expired.usage.output_tokens == 0
    assert expired.error is not None
    assert expired.error["retryable"] is True


def test_errored_lines_carry_type_and_retryable(
    emu: Emulator, anthropic_backend: AnthropicBatchBackend, write_chunk
):
    emu.configure(error_rate=0.4)
    rows = [anthropic_row(f"ok{i}") for i in range(30)]
    # A request the API cannot run as written: errored with invalid_request_error, not retryable.
    rows.append({"custom_id": "bad", "params": {"model": "claude-haiku-4-5", "messages": []}})
    batch_id = anthropic_backend.submit(write_chunk(rows), request_count=len(rows), tag={})
    emu.advance(3 * 3600)

    outcomes = {o.custom_id: o for o in anthropic_backend.iter_outcomes(batch_id)}

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
        assert outcome.error["type"] != "invalid_request_error"
        assert outcome.response is None
        assert outcome.usage.input_tokens == 0


def test_cancel_gives_canceled_outcomes_and_is_idempotent(
    emu: Emulator, anthropic_backend: AnthropicBatchBackend, write_chunk
):
    emu.configure(batch_turnaround_s=4 * 3600, cancel_latency_s=60)
    ids = [f"c{i}" for i in range(40)]
    batch_id = anthropic_backend.submit(write_chunk(anthropic_row(i) for i in ids), request_count=40, tag={})
    emu.advance(60)

    anthropic_backend.cancel(batch_id)
    status = anthropic_backend.retrieve(batch_id)
    assert status.phase in ("canceling", "ended")
    emu.advance(600)
    status = anthropic_backend.retrieve(batch_id)
    assert status.ended

    anthropic_backend.cancel(batch_id)  # already ended: not an error

    outcomes = list(anthropic_backend.iter_outcomes(batch_id))
    assert sorted(o.custom_id for o in outcomes) == sorted(ids)
    assert any(o.status == "canceled" for o in outcomes)
    assert {o.status for o in outcomes} <= {"canceled", "succeeded", "errored"}


def test_find_submitted_by_created_after_and_count(
    emu: Emulator, anthropic_backend: AnthropicBatchBackend, write_chunk
):
    before = emu.now()
    three = anthropic_backend.submit(
        write_chunk(anthropic_row(f"a{i}") for i in range(3)), request_count=3, tag={}
    )
    five = anthropic_backend.submit(
        write_chunk(anthropic_row(f"b{i}") for i in range(5)), request_count=5, tag={}
    )

    assert anthropic_backend.find_submitted({"k": "v"}, created_after=before - 1, request_count=5) == [five]
    assert anthropic_backend.find_submitted({}, created_after=before - 1, request_count=3) == [three]
    assert anthropic_backend.find_submitted({}, created_after=before - 1, request_count=4) == []
    assert anthropic_backend.find_submitted({}, created_after=emu.now() + 3600, request_count=5) == []


def test_outcomes_survive_flaky_status_and_content_calls(
    caplog: pytest.LogCaptureFixture, emu: Emulator, anthropic_backend: AnthropicBatchBackend, write_chunk
):
    ids = [f"f{i}" for i in range(50)]
    batch_id = anthropic_backend.submit(write_chunk(anthropic_row(i) for i in ids), request_count=50, tag={})
    emu.advance(3 * 3600)
    emu.configure(poll_error_rate=0.25)

    with caplog.at_level(logging.WARNING, logger="airflow_provider_tokentier.backends"):
        # Several full downloads, each checked, so the seeded fault sequence is sure to be hit.
        for _ in range(4):
            outcomes = list(anthropic_backend.iter_outcomes(batch_id))
            assert sorted(o.custom_id for o in outcomes) == sorted(ids)
    assert "retrying" in caplog.text  # the emulator's draws are seeded: this run does hit faults


def test_limits(anthropic_backend: AnthropicBatchBackend):
    assert anthropic_backend.limits.max_requests == 100_000
    assert anthropic_backend.limits.max_bytes == 256 * 1024 * 1024
