"""Flex and standard executors through the real SDKs over real HTTP to the emulator."""

from __future__ import annotations

import http.server
import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import httpx2
import pytest

from airflow_provider_tokentier.backends.sync_tiers import (
    FLEX_NOT_AVAILABLE,
    RESOURCE_UNAVAILABLE,
    Backoff,
    NonFlexModelError,
    retry_after_seconds,
    run_sync_tier,
)
from airflow_provider_tokentier.core.pricing import UnknownModelPriceWarning, sum_usd
from airflow_provider_tokentier.core.result_rows import RESULT_STATUSES, ResultTally
from airflow_provider_tokentier.results import read_results
from airflow_provider_tokentier.testing import Emulator
from tests.integration.executors.conftest import (
    NON_FLEX_MODEL,
    anthropic_factory,
    anthropic_rows,
    chat_rows,
    embedding_rows,
    openai_factory,
    responses_rows,
)

FAST = Backoff(initial=0.005, maximum=0.02)
MANIFEST_KEYS = {
    "results_uri",
    "total",
    "counts",
    "rounds",
    "batches",
    "tiers",
    "cost_usd",
    "standard_cost_usd",
    "savings_usd",
    "decision",
    "provider",
    "model",
    "submitted_at",
    "finished_at",
    "deadline",
    "budget",
    "dropped_results",
    "disowned_batches",
    "schema_version",
}


def _run(emu: Emulator, rows: Any, out: Path, **options: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    options.setdefault("backoff", FAST)
    provider = options.pop("provider", "openai")
    client = options.pop("client", None) or (
        anthropic_factory(emu.base_url) if provider == "anthropic" else openai_factory(emu.openai_base_url)
    )
    manifest = run_sync_tier(rows, provider=provider, client=client, out=out, **options)
    return manifest, list(read_results(str(out)))


def _tiers(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(row["tier"] for row in rows if row["status"] == "succeeded")


def _billed_by_tier(emu: Emulator) -> dict[str, int]:
    return {tier: bucket["requests"] for tier, bucket in emu.billing()["by_tier"].items()}


def _check_manifest(manifest: dict[str, Any], rows: list[dict[str, Any]], provider: str = "openai") -> None:
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["total"] == len(rows) == len({row["custom_id"] for row in rows})
    assert manifest["rounds"] == 1
    assert manifest["batches"] == []
    assert manifest["decision"] is None
    assert manifest["provider"] == provider
    assert manifest["cost_usd"] == sum_usd(row["cost_usd"] for row in rows)
    assert manifest["standard_cost_usd"] == sum_usd(row["standard_cost_usd"] for row in rows)
    assert dict(manifest["counts"]) == {
        **dict.fromkeys(RESULT_STATUSES, 0),
        **Counter(row["status"] for row in rows),
    }
    assert manifest["tiers"] == {"batch": 0, "flex": 0, "standard": 0, **Counter(row["tier"] for row in rows)}
    for row in rows:
        assert (row["batch_id"], row["round"], row["provider"]) == (None, 0, provider)
        assert row["tier"] in ("flex", "standard")


# -- flex -------------------------------------------------------------------------------------------


def test_flex_served_on_flex_at_half_price(tokentier_emulator: Emulator, tmp_path: Path) -> None:
    manifest, rows = _run(tokentier_emulator, chat_rows(20), tmp_path / "r.jsonl", tier="flex")

    _check_manifest(manifest, rows)
    assert manifest["counts"]["succeeded"] == 20
    assert _tiers(rows) == {"flex": 20}
    assert all(row["response"]["service_tier"] == "flex" for row in rows)
    assert _billed_by_tier(tokentier_emulator) == {"flex": 20}
    assert manifest["cost_usd"] == pytest.approx(tokentier_emulator.billing()["usd"], abs=1e-6)
    assert manifest["cost_usd"] > 0
    assert manifest["savings_usd"] == pytest.approx(manifest["cost_usd"], abs=1e-9)  # flex is 0.5x


def test_flex_always_unavailable_falls_back_to_standard(tokentier_emulator: Emulator, tmp_path: Path) -> None:
    tokentier_emulator.configure(flex_429_rate=1.0)
    manifest, rows = _run(
        tokentier_emulator, chat_rows(12), tmp_path / "r.jsonl", tier="flex", flex_patience=0.05
    )

    _check_manifest(manifest, rows)
    assert manifest["counts"]["succeeded"] == 12
    assert _tiers(rows) == {"standard": 12}
    assert all(row["response"]["service_tier"] == "default" for row in rows)
    assert _billed_by_tier(tokentier_emulator) == {"standard": 12}
    assert manifest["cost_usd"] == pytest.approx(tokentier_emulator.billing()["usd"], abs=1e-6)
    assert manifest["savings_usd"] == 0
    # Every request was refused on flex at least once before its standard call.
    assert tokentier_emulator.calls()["POST /v1/chat/completions"] >= 2 * 12


@pytest.mark.parametrize("rows_of", [chat_rows, responses_rows], ids=["chat", "responses"])
def test_flex_half_unavailable_mixes_tiers_as_served(
    tokentier_emulator: Emulator, tmp_path: Path, rows_of: Any
) -> None:
    tokentier_emulator.configure(flex_429_rate=0.5)
    # Zero patience: one flex try per request, so about half the rows fall back.
    manifest, rows = _run(tokentier_emulator, rows_of(60), tmp_path / "r.jsonl", tier="flex", flex_patience=0)

    _check_manifest(manifest, rows)
    tiers = _tiers(rows)
    assert tiers["flex"] > 0
    assert tiers["standard"] > 0
    assert sum(tiers.values()) == 60
    for row in rows:
        assert row["tier"] == ("flex" if row["response"]["service_tier"] == "flex" else "standard")
    assert _billed_by_tier(tokentier_emulator) == dict(tiers)
    billing = tokentier_emulator.billing()
    assert manifest["cost_usd"] == pytest.approx(billing["usd"], abs=1e-6)
    for tier, bucket in billing["by_tier"].items():
        ours = sum_usd(row["cost_usd"] for row in rows if row["tier"] == tier)
        assert ours == pytest.approx(bucket["usd"], abs=1e-6)
    assert 0 < manifest["savings_usd"] < manifest["standard_cost_usd"]


def test_flex_patience_lets_some_requests_through_on_retry(
    tokentier_emulator: Emulator, tmp_path: Path
) -> None:
    tokentier_emulator.configure(flex_429_rate=0.5)
    manifest, rows = _run(
        tokentier_emulator,
        chat_rows(30),
        tmp_path / "r.jsonl",
        tier="flex",
        flex_patience=30,
        backoff=Backoff(initial=0.001, maximum=0.002),
    )
    # With ample patience every request eventually gets flex capacity.
    assert _tiers(rows) == {"flex": 30}
    assert tokentier_emulator.calls()["POST /v1/chat/completions"] > 30
    assert manifest["cost_usd"] == pytest.approx(tokentier_emulator.billing()["usd"], abs=1e-6)


def test_flex_on_unavailable_fail_lands_retryable_errors(
    tokentier_emulator: Emulator, tmp_path: Path
) -> None:
    tokentier_emulator.configure(flex_429_rate=1.0)
    manifest, rows = _run(
        tokentier_emulator,
        chat_rows(8),
        tmp_path / "r.jsonl",
        tier="flex",
        flex_patience=0.02,
        on_unavailable="fail",
    )

    _check_manifest(manifest, rows)
    assert manifest["counts"]["errored"] == 8
    for row in rows:
        assert row["status"] == "errored"
        assert row["tier"] == "flex"
        assert row["response"] is None
        assert row["error"]["type"] == RESOURCE_UNAVAILABLE
        assert row["error"]["retryable"] is True
        assert row["cost_usd"] == 0
    assert tokentier_emulator.billing()["requests_billed"] == 0
    assert manifest["cost_usd"] == 0


def test_non_flex_model_runs_on_standard(tokentier_emulator: Emulator, tmp_path: Path) -> None:
    with pytest.warns(UnknownModelPriceWarning):
        manifest, rows = _run(
            tokentier_emulator,
            chat_rows(10, model=NON_FLEX_MODEL),
            tmp_path / "r.jsonl",
            tier="flex",
            max_concurrency=2,
        )

    assert _tiers(rows) == {"standard": 10}
    assert _billed_by_tier(tokentier_emulator) == {"standard": 10}
    assert manifest["cost_usd"] is None  # no price known for the model: never a made-up one
    # The 400 is learned once per model: later rows skip the flex attempt.
    assert tokentier_emulator.calls()["POST /v1/chat/completions"] <= 10 + 2


def test_non_flex_model_policy_error_errors_each_row(tokentier_emulator: Emulator, tmp_path: Path) -> None:
    manifest, rows = _run(
        tokentier_emulator,
        chat_rows(6, model=NON_FLEX_MODEL),
        tmp_path / "r.jsonl",
        tier="flex",
        non_flex_model="error",
        max_concurrency=1,
    )

    assert manifest["counts"]["errored"] == 6
    assert {row["error"]["type"] for row in rows} == {FLEX_NOT_AVAILABLE}
    assert not any(row["error"]["retryable"] for row in rows)
    assert "gpt-6-nova" in rows[0]["error"]["message"]
    assert tokentier_emulator.billing()["requests_billed"] == 0
    assert tokentier_emulator.calls()["POST /v1/chat/completions"] == 1


@pytest.mark.parametrize(
    ("rows_of", "options"),
    [
        (lambda: embedding_rows(3), {}),
        (lambda: chat_rows(3, model=NON_FLEX_MODEL), {"flex_models": ["gpt-6-luna", "gpt-6-sol"]}),
    ],
    ids=["embeddings-endpoint", "model-not-in-flex-list"],
)
def test_non_flex_known_up_front_errors_before_any_call(
    tokentier_emulator: Emulator, tmp_path: Path, rows_of: Any, options: dict[str, Any]
) -> None:
    with pytest.raises(NonFlexModelError, match="nothing was sent"):
        _run(
            tokentier_emulator,
            rows_of(),
            tmp_path / "r.jsonl",
            tier="flex",
            non_flex_model="error",
            **options,
        )
    assert tokentier_emulator.calls() == {}


def test_flex_models_list_accepts_versioned_ids(tokentier_emulator: Emulator, tmp_path: Path) -> None:
    _manifest, rows = _run(
        tokentier_emulator,
        chat_rows(3, model="gpt-6-luna-2026-09-01"),
        tmp_path / "r.jsonl",
        tier="flex",
        non_flex_model="error",
        flex_models=["gpt-6-luna"],
    )
    assert _tiers(rows) == {"flex": 3}


def test_embeddings_on_flex_run_standard_by_policy(tokentier_emulator: Emulator, tmp_path: Path) -> None:
    manifest, rows = _run(tokentier_emulator, embedding_rows(5), tmp_path / "r.jsonl", tier="flex")

    assert _tiers(rows) == {"standard": 5}
    assert isinstance(rows[0]["response"]["data"][0]["embedding"], list)  # floats, as the API returns
    assert _billed_by_tier(tokentier_emulator) == {"standard": 5}
    assert manifest["cost_usd"] == pytest.approx(tokentier_emulator.billing()["usd"], abs=1e-6)


# -- standard ---------------------------------------------------------------------------------------


def test_openai_standard_with_a_permanent_error(tokentier_emulator: Emulator, tmp_path: Path) -> None:
    good = list(chat_rows(5))
    bad = {**good[0], "custom_id": "bad", "body": {**good[0]["body"], "messages": [{"content": "no role"}]}}
    manifest, rows = _run(tokentier_emulator, [*good, bad], tmp_path / "r.jsonl", tier="standard")

    _check_manifest(manifest, rows)
    by_id = {row["custom_id"]: row for row in rows}
    assert by_id["bad"]["status"] == "errored"
    assert by_id["bad"]["error"]["type"] == "invalid_request_error"
    assert by_id["bad"]["error"]["retryable"] is False
    assert manifest["counts"]["succeeded"] == 5
    # A permanent error is not retried.
    assert tokentier_emulator.calls()["POST /v1/chat/completions"] == 6
    assert manifest["cost_usd"] == pytest.approx(tokentier_emulator.billing()["usd"], abs=1e-6)


def test_anthropic_standard(tokentier_emulator: Emulator, tmp_path: Path) -> None:
    rows_in = list(anthropic_rows(10))
    bad = {
        "custom_id": "bad",
        "params": {**rows_in[0]["params"], "messages": [{"role": "system", "content": "x"}]},
    }
    manifest, rows = _run(
        tokentier_emulator, [*rows_in, bad], tmp_path / "r.jsonl", provider="anthropic", tier="standard"
    )

    _check_manifest(manifest, rows, provider="anthropic")
    by_id = {row["custom_id"]: row for row in rows}
    assert manifest["counts"]["succeeded"] == 10
    assert by_id["a0"]["response"]["type"] == "message"
    assert by_id["a0"]["usage"]["input_tokens"] > 0
    assert by_id["bad"]["error"]["type"] == "invalid_request_error"
    assert by_id["bad"]["error"]["retryable"] is False
    assert _billed_by_tier(tokentier_emulator) == {"standard": 10}
    assert manifest["cost_usd"] == pytest.approx(tokentier_emulator.billing()["usd"], abs=1e-6)
    assert manifest["savings_usd"] == 0


def test_anthropic_has_no_flex_tier() -> None:
    with pytest.raises(ValueError, match="OpenAI only"):
        run_sync_tier([], provider="anthropic", tier="flex", client=object(), out=Path("/nonexistent"))


# -- concurrency, retries, retry-after ----------------------------------------------------------------


class _InFlight(httpx2.AsyncBaseTransport):
    """Counts requests between sending and the response head: a structural concurrency probe."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.now = 0
        self.peak = 0
        self.total = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.now += 1
        self.total += 1
        self.peak = max(self.peak, self.now)
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.now -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("limit", [1, 4])
def test_concurrency_bound_is_respected(tokentier_emulator: Emulator, tmp_path: Path, limit: int) -> None:
    tokentier_emulator.configure(latency_ms=40)
    probe = _InFlight()
    client = openai_factory(
        tokentier_emulator.openai_base_url, http_client=httpx2.AsyncClient(transport=probe)
    )
    manifest, _rows = _run(
        tokentier_emulator,
        chat_rows(16),
        tmp_path / "r.jsonl",
        tier="standard",
        client=client,
        max_concurrency=limit,
    )
    assert manifest["counts"]["succeeded"] == 16
    assert probe.total == 16
    # Never more than the limit in flight; and the limit is actually used (40 ms per call).
    assert probe.peak == limit


def test_connection_errors_are_retried_then_land_retryable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manifest = run_sync_tier(
        chat_rows(2),
        provider="openai",
        tier="standard",
        client=openai_factory(f"http://127.0.0.1:{port}/v1"),
        out=tmp_path / "r.jsonl",
        max_attempts=3,
        backoff=FAST,
    )
    rows = list(read_results(str(tmp_path / "r.jsonl")))
    assert manifest["counts"]["errored"] == 2
    assert {row["error"]["type"] for row in rows} == {"connection_error"}
    assert all(row["error"]["retryable"] for row in rows)
    assert "after 3 attempts" in rows[0]["error"]["message"]


class _Flaky(http.server.BaseHTTPRequestHandler):
    """A tiny provider stand-in: 429 with retry-after-ms (or a 503) twice, then a chat completion."""

    script: ClassVar[list[tuple[int, dict[str, str]]]] = []
    seen: ClassVar[list[float]] = []

    def do_POST(self) -> None:
        import time

        self.rfile.read(int(self.headers["content-length"]))
        _Flaky.seen.append(time.monotonic())
        status, headers = _Flaky.script.pop(0) if _Flaky.script else (200, {})
        body: dict[str, Any]
        if status == 200:
            body = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-6-luna",
                "service_tier": "default",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            }
        else:
            body = {
                "error": {"message": "slow down", "type": "rate_limit_exceeded", "param": None, "code": None}
            }
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"content-type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Flaky.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_transient_errors_are_retried_honouring_retry_after(flaky_server: str, tmp_path: Path) -> None:
    _Flaky.script = [(429, {"retry-after-ms": "300"}), (503, {})]
    manifest = run_sync_tier(
        chat_rows(1),
        provider="openai",
        tier="standard",
        client=openai_factory(flaky_server),
        out=tmp_path / "r.jsonl",
        backoff=FAST,
    )
    assert manifest["counts"]["succeeded"] == 1
    assert len(_Flaky.seen) == 3
    # The retry-after (300 ms) was honoured, not the 5 ms back-off.
    assert _Flaky.seen[1] - _Flaky.seen[0] >= 0.3


def test_transient_errors_beyond_max_attempts_land_retryable(flaky_server: str, tmp_path: Path) -> None:
    _Flaky.script = [(503, {})] * 5
    manifest = run_sync_tier(
        chat_rows(1),
        provider="openai",
        tier="standard",
        client=openai_factory(flaky_server),
        out=tmp_path / "r.jsonl",
        max_attempts=2,
        backoff=FAST,
    )
    (row,) = read_results(str(tmp_path / "r.jsonl"))
    assert manifest["counts"]["errored"] == 1
    assert len(_Flaky.seen) == 2
    assert row["error"]["retryable"] is True


# -- pure helpers ---------------------------------------------------------------------------------


def test_retry_after_parsing() -> None:
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_result_tally_is_order_independent() -> None:
    # Only the fields a tally reads: a partial ResultRow.
    rows: list[Mapping[str, Any]] = [
        {
            "custom_id": str(i),
            "status": "succeeded",
            "tier": "flex",
            "cost_usd": cost,
            "standard_cost_usd": cost * 2,
        }
        for i, cost in enumerate([0.1, 0.2, 0.3, 1e-9, 123.456789012])
    ]
    forward, backward = ResultTally(), ResultTally()
    for row in rows:
        forward.add(row)
    for row in reversed(rows):
        backward.add(row)
    assert forward.cost_usd() == backward.cost_usd() == sum_usd(row["cost_usd"] for row in rows)


def test_rescue_round_is_stamped_and_model_reported(tokentier_emulator: Emulator, tmp_path: Path) -> None:
    manifest, rows = _run(tokentier_emulator, chat_rows(3), tmp_path / "r.jsonl", tier="flex", round_=2)
    assert {row["round"] for row in rows} == {2}
    assert manifest["model"] == "gpt-6-luna"
