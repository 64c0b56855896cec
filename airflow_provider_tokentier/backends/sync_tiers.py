"""Synchronous-tier executors: run request rows on OpenAI flex or on either provider's standard tier.

The same shape serves both tiers: a :class:`SyncTierExecutor` takes normalized request rows
(the output of :func:`~airflow_provider_tokentier.core.requests.iter_validated`), sends each one
through the provider's official **async** SDK client with the SDK's own retries switched off
(``client.with_options(max_retries=0)``), and yields one result row per request in the standard
row schema (``tier`` "flex" | "standard", ``batch_id`` None, ``round`` 0) as soon as it settles.
At most ``max_concurrency`` rows are in progress at any time -- their HTTP calls *and* their
back-off sleeps -- and rows are pulled from the input lazily, so memory stays flat whatever
the workload size.

Failure policy (tokentier's, not the SDK's):

* **flex** (OpenAI Chat Completions and Responses only): the request carries
  ``service_tier="flex"``. A 429 "resource unavailable" is not billed; it is retried with
  jittered exponential back-off (a ``retry-after`` header wins, and pauses every flex call of
  the run) for up to ``flex_patience`` seconds per request, then the request falls back to
  standard (``on_unavailable="standard"``) or lands errored and retryable (``"fail"``). A model
  without flex (known up front from ``flex_models`` or the endpoint, else learned from the API's
  400 ``invalid_request_error`` about ``service_tier``) runs on standard
  (``non_flex_model="standard"``) or is an error (``"error"``: raised before any paid call when
  it is knowable, else one errored row per request). Requests time out after 15 minutes.
* **both tiers**: 408/409/429/5xx and connection errors are retried with jittered exponential
  back-off up to ``max_attempts`` calls; other 4xx land as errored rows (not retryable).

The tier recorded per row is the one the provider says it used (the echoed ``service_tier``:
"flex" -> flex, anything else -> standard), and the row is priced at that tier.

:func:`run_sync_tier` is the synchronous wrapper a worker calls: it streams the rows into a
binary file object as JSONL and returns the results manifest (same keys as the batch sensor's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import email.utils
import functools
import inspect
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from typing import IO, Any, Protocol

import anthropic
import openai

from airflow_provider_tokentier.backends.base import is_transient_status
from airflow_provider_tokentier.core.budget import (
    BUDGET_EXCEEDED,
    SKIPPED_BUDGET,
    SpendMeter,
    estimate_row_cost,
)
from airflow_provider_tokentier.core.errors import NonFlexModelError
from airflow_provider_tokentier.core.jsonl import dumps_line
from airflow_provider_tokentier.core.log_format import sync_progress_line
from airflow_provider_tokentier.core.models import offers_flex
from airflow_provider_tokentier.core.pricing import (
    PriceTable,
    Usage,
    usage_from_anthropic,
    usage_from_openai,
)
from airflow_provider_tokentier.core.progress import ErrorSamples
from airflow_provider_tokentier.core.result_rows import (
    ErrorInfo,
    ResultRow,
    ResultTally,
    is_retryable_error,
    make_result_row,
    now_iso,
)

log = logging.getLogger(__name__)

#: The tiers this module runs.
SYNC_TIERS = ("flex", "standard")
#: What a flex request does once ``flex_patience`` is used up.
ON_UNAVAILABLE_POLICIES = ("standard", "fail")
#: What a flex run does with a model (or endpoint) that has no flex tier.
NON_FLEX_POLICIES = ("standard", "error")

DEFAULT_MAX_CONCURRENCY = 16
#: Seconds a flex request keeps backing off from 429 "resource unavailable" before giving up.
DEFAULT_FLEX_PATIENCE_S = 300.0
#: OpenAI recommends a 15-minute client timeout for flex requests.
FLEX_REQUEST_TIMEOUT_S = 900.0
#: The SDKs' own default request timeout.
STANDARD_REQUEST_TIMEOUT_S = 600.0
#: Calls per request (first try included) on transient errors: 408/409/429/5xx, connection.
DEFAULT_MAX_ATTEMPTS = 4
#: Rows between two progress log lines of :func:`run_sync_tier`.
DEFAULT_PROGRESS_EVERY = 100

#: OpenAI endpoints that take ``service_tier="flex"``.
FLEX_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/responses"})
#: OpenAI endpoints that take a ``service_tier`` at all.
_SERVICE_TIER_ENDPOINTS = FLEX_ENDPOINTS

#: ``error.type`` of a flex request refused for capacity until its patience ran out.
RESOURCE_UNAVAILABLE = "resource_unavailable"
#: ``error.type`` of a flex request for a model or endpoint without flex (policy "error").
FLEX_NOT_AVAILABLE = "flex_not_available"

# SDK keyword arguments that are request options, not body fields.
_CALL_OPTIONS = frozenset({"self", "extra_headers", "extra_query", "extra_body", "timeout"})


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Jittered exponential back-off.

    Attempt ``n`` (0-based) waits ``initial * multiplier**n``, capped at ``maximum``, times a
    random factor in ``[1 - jitter, 1]``.

    A server's ``retry-after`` replaces the computed delay (plus up to 10% jitter, so a crowd of
    waiting requests does not come back in the same millisecond).
    """

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid back-off {self!r}")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        if retry_after is not None:
            return retry_after * (1.0 + 0.1 * rng.random())
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        return base * (1.0 - self.jitter * rng.random())


@dataclasses.dataclass
class ExecutorStats:
    """What happened on the wire, for the final summary (not part of the manifest)."""

    calls: int = 0
    flex_unavailable: int = 0
    fallbacks: int = 0
    non_flex: int = 0
    retries: int = 0

    def to_dict(self) -> dict[str, int]:
        """Return the counters as a dict."""
        return dataclasses.asdict(self)


class _Unavailable:
    """Flex patience ran out (or the deadline came) while the tier was refusing for capacity."""

    def __init__(self, message: str) -> None:
        self.message = message


class _NonFlex:
    """The API said this model has no flex tier."""

    def __init__(self, message: str) -> None:
        self.message = message


class _Failed:
    """The request failed for good (a permanent error, or transient ones beyond the budget)."""

    def __init__(self, error: ErrorInfo) -> None:
        self.error = error


_Attempt = dict[str, Any] | _Failed | _Unavailable | _NonFlex


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``retry-after`` (delta seconds or HTTP date)."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max((when - datetime.datetime.now(datetime.timezone.utc)).total_seconds(), 0.0)


def _error_fields(exc: openai.APIStatusError | anthropic.APIStatusError) -> tuple[str, str | None, str]:
    """(type, code, message) of an API error, for either SDK's body shape."""
    body: Any = exc.body
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]  # Anthropic: {"type": "error", "error": {...}}
    if not isinstance(body, Mapping):
        body = {}
    error_type = body.get("type") or body.get("code") or f"http_{exc.status_code}"
    code = body.get("code")
    message = body.get("message")
    if not isinstance(message, str) or not message:
        message = str(exc)
    return str(error_type), None if code is None else str(code), message


def _is_resource_unavailable(status: int, error_type: str, code: str | None, message: str) -> bool:
    if status != 429:
        return False
    return RESOURCE_UNAVAILABLE in (error_type, code) or "resource unavailable" in message.lower()


def _is_non_flex_refusal(
    status: int, exc: openai.APIStatusError | anthropic.APIStatusError, error_type: str, message: str
) -> bool:
    if status != 400 or error_type != "invalid_request_error":
        return False
    param = getattr(exc, "param", None)
    return param == "service_tier" or "service_tier" in message or "flex" in message.lower()


@functools.lru_cache(maxsize=32)
def _body_parameters(method: Callable[..., Any]) -> frozenset[str]:
    """Body fields an SDK ``create`` method takes as keyword arguments."""
    return frozenset(inspect.signature(method).parameters) - _CALL_OPTIONS


class SyncTierExecutor:
    """Run request rows on the ``flex`` or ``standard`` tier with bounded concurrency.

    :param provider: ``"openai"`` or ``"anthropic"`` (flex is OpenAI only).
    :param tier: ``"flex"`` or ``"standard"``.
    :param client: an ``openai.AsyncOpenAI`` or ``anthropic.AsyncAnthropic`` client; the executor
        uses a copy with ``max_retries=0`` (the client itself is left as it is).
    :param endpoint: OpenAI endpoint for rows without ``url`` (normalized rows always have one).
    :param max_concurrency: rows in progress at once (calls and back-off sleeps).
    :param flex_patience: seconds per request to keep retrying flex 429 "resource unavailable".
    :param on_unavailable: ``"standard"`` (fall back per request) or ``"fail"`` (errored,
        retryable row of type ``resource_unavailable``) once ``flex_patience`` is used up.
    :param non_flex_model: ``"standard"`` (run such requests on standard) or ``"error"``
        (:class:`NonFlexModelError` before any call when knowable, else an errored row of type
        ``flex_not_available`` per request).
    :param flex_models: models known to offer flex; a model outside it is treated as non-flex
        before any call. ``None``: learn it from the API's 400 answer.
    :param request_timeout: seconds per HTTP call (default 900 on flex, 600 on standard).
    :param max_attempts: calls per request on transient errors (first try included).
    :param backoff: back-off for transient errors and flex capacity refusals.
    :param prices: price table for row costs (default: the built-in table).
    :param deadline: unix time after which no back-off sleeps any more: a waiting flex request
        falls back (or fails) at once, a transient error lands errored (retryable).
    :param round_: the ``round`` stamped on result rows (0; a deadline rescue run as round N of a
        batch workload passes N).
    :param budget: a :class:`~airflow_provider_tokentier.core.budget.SpendMeter` holding
        ``max_cost_usd``: a request starts only while its standard-tier estimate fits beside what
        was spent and what is in flight; from the first that does not, every remaining row lands
        ``skipped_budget`` without a call.
    """

    def __init__(
        self,
        *,
        provider: str,
        tier: str,
        client: Any,
        endpoint: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        flex_patience: float = DEFAULT_FLEX_PATIENCE_S,
        on_unavailable: str = "standard",
        non_flex_model: str = "standard",
        flex_models: Collection[str] | None = None,
        request_timeout: float | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff: Backoff | None = None,
        prices: PriceTable | None = None,
        deadline: float | None = None,
        round_: int = 0,
        budget: SpendMeter | None = None,
    ) -> None:
        check_sync_tier_options(
            provider=provider,
            tier=tier,
            max_concurrency=max_concurrency,
            flex_patience=flex_patience,
            on_unavailable=on_unavailable,
            non_flex_model=non_flex_model,
            request_timeout=request_timeout,
            max_attempts=max_attempts,
        )
        self.provider = provider
        self.tier = tier
        self.client = client.with_options(max_retries=0)
        self.endpoint = endpoint
        self.max_concurrency = max_concurrency
        self.flex_patience = float(flex_patience)
        self.on_unavailable = on_unavailable
        self.non_flex_model = non_flex_model
        self.flex_models = None if flex_models is None else frozenset(flex_models)
        self.request_timeout = request_timeout
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.prices = prices
        self.deadline = deadline
        self.round = round_
        self.budget = budget
        self.stats = ExecutorStats()
        self._rng = random.Random()
        self._non_flex_models: set[str] = set()
        self._cooldown_until: dict[str, float] = {}

    # -- the stream ----------------------------------------------------------------------------
    async def iter_results(self, rows: Iterable[Mapping[str, Any]]) -> AsyncIterator[ResultRow]:
        """Yield one result row per input row, in completion order.

        ``rows`` are pulled lazily, at most ``max_concurrency`` ahead of the rows yielded. With
        ``non_flex_model="error"``, a row whose model or endpoint is known to lack flex raises
        :class:`NonFlexModelError` when it is reached -- for a validated OpenAI workload (one
        model, one endpoint) that is the first row, before any call.
        """
        source = iter(rows)
        pending: set[asyncio.Task[ResultRow]] = set()
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.max_concurrency:
                    row = next(source, None)
                    if row is None:
                        exhausted = True
                        break
                    self.preflight(row)
                    estimate = self._budget_estimate(row)
                    if self.budget is not None and not self.budget.try_start(estimate):
                        yield self._skipped(row)
                        continue
                    pending.add(asyncio.create_task(self._metered(row, estimate)))
                if not pending:
                    return
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    yield task.result()
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def preflight(self, row: Mapping[str, Any]) -> None:
        """Raise :class:`NonFlexModelError` for a row that cannot run on flex under policy "error"."""
        if self.tier != "flex" or self.non_flex_model != "error":
            return
        endpoint, payload = self._request_of(row)
        reason = self._known_non_flex(endpoint, str(payload.get("model")), learned=False)
        if reason is not None:
            raise NonFlexModelError(
                f"request {row.get('custom_id')!r}: {reason}; nothing was sent. Use "
                "non_flex_model='standard' to run it on the standard tier instead."
            )

    # -- the spend cap -------------------------------------------------------------------------
    def _budget_estimate(self, row: Mapping[str, Any]) -> float | None:
        # Standard prices: a flex request may fall back to standard, and an upper bound is wanted.
        if self.budget is None or self.budget.cap is None:
            return None
        return estimate_row_cost(row, self.provider, "standard", self.prices)

    async def _metered(self, row: Mapping[str, Any], estimate: float | None) -> ResultRow:
        result = await self.run_row(row)
        if self.budget is not None:
            self.budget.finish(estimate, result["cost_usd"])
        return result

    def _skipped(self, row: Mapping[str, Any]) -> ResultRow:
        assert self.budget is not None
        _endpoint, payload = self._request_of(row)
        return make_result_row(
            custom_id=str(row["custom_id"]),
            status=SKIPPED_BUDGET,
            tier=self.tier,
            provider=self.provider,
            model=str(payload.get("model")),
            round=self.round,
            error={
                "type": BUDGET_EXCEEDED,
                "message": f"not sent: it could have crossed max_cost_usd=${self.budget.cap} "
                f"(${self.budget.spent:.4f} spent, ${self.budget.reserved:.4f} in flight)",
                "retryable": False,
            },
            prices=self.prices,
        )

    # -- one row -------------------------------------------------------------------------------
    async def run_row(self, row: Mapping[str, Any]) -> ResultRow:
        """Run one normalized request row to a settled result row (never raises for API errors)."""
        custom_id = str(row["custom_id"])
        endpoint, payload = self._request_of(row)
        model = str(payload.get("model"))
        try:
            tier = self.tier
            if tier == "flex":
                reason = self._known_non_flex(endpoint, model)
                if reason is not None:
                    self.stats.non_flex += 1
                    if self.non_flex_model == "error":
                        return self._errored(custom_id, model, FLEX_NOT_AVAILABLE, reason, retryable=False)
                    tier = "standard"
            if tier == "flex":
                outcome = await self._attempts(endpoint, payload, "flex")
                if isinstance(outcome, _NonFlex):
                    self._non_flex_models.add(model)
                    self.stats.non_flex += 1
                    if self.non_flex_model == "error":
                        return self._errored(
                            custom_id, model, FLEX_NOT_AVAILABLE, outcome.message, retryable=False
                        )
                elif isinstance(outcome, _Unavailable):
                    if self.on_unavailable == "fail":
                        return self._errored(
                            custom_id, model, RESOURCE_UNAVAILABLE, outcome.message, retryable=True
                        )
                    self.stats.fallbacks += 1
                else:
                    return self._settled(custom_id, model, outcome)
            outcome = await self._attempts(endpoint, payload, "standard")
            if isinstance(outcome, (_NonFlex, _Unavailable)):  # pragma: no cover - flex-only outcomes
                raise AssertionError(f"unexpected {outcome!r} on the standard tier")
            return self._settled(custom_id, model, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an SDK-side refusal: one errored row, not a dead run
            log.exception("request %r failed unexpectedly", custom_id)
            return self._errored(
                custom_id, model, "client_error", f"{type(exc).__name__}: {exc}", retryable=False
            )

    def _request_of(self, row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        if self.provider == "anthropic":
            return "/v1/messages", dict(row["params"])
        endpoint = row.get("url") or self.endpoint
        if not endpoint:
            raise ValueError(f"request {row.get('custom_id')!r} has no url and no endpoint was given")
        return str(endpoint), dict(row["body"])

    def _known_non_flex(self, endpoint: str, model: str, *, learned: bool = True) -> str | None:
        """Why ``model`` at ``endpoint`` cannot run on flex, or None; ``learned`` adds what the API said."""
        if endpoint not in FLEX_ENDPOINTS:
            return f"the {endpoint} endpoint has no flex tier"
        if learned and model in self._non_flex_models:
            return f"model {model!r} has no flex tier (the API refused an earlier flex request for it)"
        if self.flex_models is not None and not offers_flex(model, self.flex_models):
            return f"model {model!r} is not among the models known to offer flex"
        return None

    def _settled(self, custom_id: str, model: str, outcome: dict[str, Any] | _Failed) -> ResultRow:
        if isinstance(outcome, _Failed):
            error = outcome.error
            return self._errored(
                custom_id, model, error["type"], error["message"], retryable=error["retryable"]
            )
        response = outcome
        tier = "flex" if response.get("service_tier") == "flex" else "standard"
        raw_usage = response.get("usage")
        usage = Usage()
        if isinstance(raw_usage, Mapping):
            usage = (
                usage_from_anthropic(raw_usage)
                if self.provider == "anthropic"
                else usage_from_openai(raw_usage)
            )
        served_model = response.get("model")
        return make_result_row(
            custom_id=custom_id,
            status="succeeded",
            tier=tier,
            provider=self.provider,
            model=served_model if isinstance(served_model, str) and served_model else model,
            round=self.round,
            response=response,
            usage=usage,
            prices=self.prices,
        )

    def _errored(
        self, custom_id: str, model: str, error_type: str, message: str, *, retryable: bool
    ) -> ResultRow:
        # Errored rows are not billed; they are reported on the tier that was asked for.
        return make_result_row(
            custom_id=custom_id,
            status="errored",
            tier=self.tier,
            provider=self.provider,
            model=model,
            round=self.round,
            error={"type": error_type, "message": message, "retryable": retryable},
            prices=self.prices,
        )

    # -- the retry loop ------------------------------------------------------------------------
    async def _attempts(self, endpoint: str, payload: dict[str, Any], tier: str) -> _Attempt:
        started = time.monotonic()
        failures = 0  # transient failures, counted against max_attempts
        refusals = 0  # flex capacity refusals, bounded by flex_patience
        while True:
            await self._wait_cooldown(tier)
            try:
                self.stats.calls += 1
                return await self._call(endpoint, payload, tier)
            except (openai.APIStatusError, anthropic.APIStatusError) as exc:
                status = exc.status_code
                error_type, code, message = _error_fields(exc)
                retry_after = retry_after_seconds(exc.response.headers)
                if tier == "flex" and _is_resource_unavailable(status, error_type, code, message):
                    self.stats.flex_unavailable += 1
                    left = min(self.flex_patience - (time.monotonic() - started), self._until_deadline())
                    if left <= 0:
                        return _Unavailable(
                            f"flex capacity unavailable for {self.flex_patience:g}s "
                            f"({refusals + 1} refusals): {message}"
                        )
                    self._cool_down(tier, retry_after)
                    await asyncio.sleep(min(self.backoff.delay(refusals, retry_after, self._rng), left))
                    refusals += 1
                    continue
                if tier == "flex" and _is_non_flex_refusal(status, exc, error_type, message):
                    return _NonFlex(message)
                retryable = is_retryable_error(self.provider, status)
                if is_transient_status(status) or status == 409:
                    failures += 1
                    if status == 429:
                        self._cool_down(tier, retry_after)
                    delay = self.backoff.delay(failures - 1, retry_after, self._rng)
                    if failures < self.max_attempts and delay < self._until_deadline():
                        self.stats.retries += 1
                        await asyncio.sleep(delay)
                        continue
                    message = f"{message} (after {failures} attempts)"
                    retryable = True
                return _Failed({"type": error_type, "message": message, "retryable": retryable})
            except (openai.APIConnectionError, anthropic.APIConnectionError) as exc:
                timed_out = isinstance(exc, (openai.APITimeoutError, anthropic.APITimeoutError))
                failures += 1
                delay = self.backoff.delay(failures - 1, None, self._rng)
                if failures < self.max_attempts and delay < self._until_deadline():
                    self.stats.retries += 1
                    await asyncio.sleep(delay)
                    continue
                return _Failed(
                    {
                        "type": "timeout" if timed_out else "connection_error",
                        "message": f"{type(exc).__name__}: {exc} (after {failures} attempts)",
                        "retryable": True,
                    }
                )

    def _until_deadline(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.time()

    def _cool_down(self, tier: str, retry_after: float | None) -> None:
        """Honour ``retry-after`` for every request of the tier, not only the one refused."""
        if retry_after:
            until = time.monotonic() + retry_after
            self._cooldown_until[tier] = max(self._cooldown_until.get(tier, 0.0), until)

    async def _wait_cooldown(self, tier: str) -> None:
        wait = min(self._cooldown_until.get(tier, 0.0) - time.monotonic(), self._until_deadline())
        if wait > 0:
            await asyncio.sleep(wait)

    async def _call(self, endpoint: str, payload: dict[str, Any], tier: str) -> dict[str, Any]:
        """One HTTP call; returns the provider-native JSON body exactly as sent."""
        timeout = self.request_timeout or (
            FLEX_REQUEST_TIMEOUT_S if tier == "flex" else STANDARD_REQUEST_TIMEOUT_S
        )
        body = dict(payload)
        if self.provider == "anthropic":
            method = self.client.messages.create
            raw_method = self.client.messages.with_raw_response.create
        else:
            resource = self._openai_resource(endpoint)
            method, raw_method = resource.create, resource.with_raw_response.create
            if endpoint in _SERVICE_TIER_ENDPOINTS:
                if tier == "flex":
                    body["service_tier"] = "flex"
                elif body.get("service_tier") == "flex":
                    body.pop("service_tier")
            if endpoint == "/v1/embeddings":
                # The SDK asks for base64 when no format is given and decodes it in the parsed
                # object; the raw body must stay what the API returns by default: floats.
                body.setdefault("encoding_format", "float")
        known = _body_parameters(getattr(method, "__func__", method))
        kwargs = {key: value for key, value in body.items() if key in known}
        extra = {key: value for key, value in body.items() if key not in known}
        if extra:
            kwargs["extra_body"] = extra
        raw = await raw_method(**kwargs, timeout=timeout)
        parsed = raw.http_response.json()
        if not isinstance(parsed, dict):
            raise ValueError(f"{endpoint} answered with a {type(parsed).__name__}, not a JSON object")
        return parsed

    def _openai_resource(self, endpoint: str) -> Any:
        client = self.client
        resources: dict[str, Any] = {
            "/v1/chat/completions": lambda: client.chat.completions,
            "/v1/responses": lambda: client.responses,
            "/v1/embeddings": lambda: client.embeddings,
            "/v1/completions": lambda: client.completions,
            "/v1/moderations": lambda: client.moderations,
        }
        if endpoint not in resources:
            raise ValueError(
                f"endpoint {endpoint!r} cannot run synchronously; expected one of {sorted(resources)}"
            )
        return resources[endpoint]()


def check_sync_tier_options(
    *,
    provider: str,
    tier: str,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    flex_patience: float = DEFAULT_FLEX_PATIENCE_S,
    on_unavailable: str = "standard",
    non_flex_model: str = "standard",
    request_timeout: float | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> None:
    """Raise ``ValueError`` for options an executor would refuse (operators check at parse time)."""
    if provider not in ("anthropic", "openai"):
        raise ValueError(f"provider must be 'anthropic' or 'openai', got {provider!r}")
    if tier not in SYNC_TIERS:
        raise ValueError(f"tier must be one of {SYNC_TIERS}, got {tier!r}")
    if tier == "flex" and provider != "openai":
        raise ValueError(
            "the flex tier is OpenAI only; use tier='standard' (or the batch tier) for Anthropic"
        )
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ValueError(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
    if flex_patience < 0:
        raise ValueError(f"flex_patience must not be negative, got {flex_patience!r}")
    if on_unavailable not in ON_UNAVAILABLE_POLICIES:
        raise ValueError(f"on_unavailable must be one of {ON_UNAVAILABLE_POLICIES}, got {on_unavailable!r}")
    if non_flex_model not in NON_FLEX_POLICIES:
        raise ValueError(f"non_flex_model must be one of {NON_FLEX_POLICIES}, got {non_flex_model!r}")
    if request_timeout is not None and request_timeout <= 0:
        raise ValueError(f"request_timeout must be positive, got {request_timeout!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be a positive integer, got {max_attempts!r}")


class InfoLogger(Protocol):
    """Anything with ``info(msg, *args)``: a stdlib logger, an adapter, Airflow's task logger."""

    def info(self, msg: Any, /, *args: Any) -> Any:
        """Log ``msg % args`` at INFO."""


#: An async SDK client, or a zero-argument callable (sync or async) that builds one.
ClientSource = Any

#: Called with the running totals and the errors so far: at the start, every
#: ``progress_every`` rows and at the end (e.g. to publish a progress record).
ProgressCallback = Callable[[ResultTally, ErrorSamples], None]

#: Seconds between two ``on_progress`` calls at most while rows keep landing, however large
#: ``progress_every`` is: slow flex rows must not leave the UI's record stale for long.
PROGRESS_CALLBACK_EVERY_S = 30.0


async def arun_sync_tier(
    rows: Iterable[Mapping[str, Any]],
    *,
    provider: str,
    tier: str,
    client: ClientSource,
    out: IO[bytes],
    results_uri: str,
    logger: InfoLogger | None = None,
    progress_every: int = DEFAULT_PROGRESS_EVERY,
    total: int | None = None,
    deadline_iso: str | None = None,
    on_progress: ProgressCallback | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Async :func:`run_sync_tier` (same arguments), for callers already on an event loop."""
    logger = logger if logger is not None else log
    submitted_at = now_iso()
    owns_client = callable(client)
    sdk_client = client() if owns_client else client
    if inspect.isawaitable(sdk_client):
        sdk_client = await sdk_client
    tally = ResultTally()
    errors = ErrorSamples()
    models: list[str] = []
    started = last_callback = time.monotonic()

    def tap(source: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
        """Note the workload's model (the first row's requested model) for the manifest."""
        for row in source:
            if not models:
                payload = row.get("params") if provider == "anthropic" else row.get("body")
                model = (payload or {}).get("model")
                models.append(model if isinstance(model, str) else "")
            yield row

    try:
        executor = SyncTierExecutor(provider=provider, tier=tier, client=sdk_client, **options)
        if on_progress is not None:
            on_progress(tally, errors)
        async for row in executor.iter_results(tap(rows)):
            out.write(dumps_line(row) + b"\n")
            out.flush()  # a row is paid for once it exists: keep it even if the worker dies next
            tally.add(row)
            errors.add_row(row["custom_id"], row["status"], row.get("error"))
            every_rows = progress_every > 0 and tally.total % progress_every == 0
            if on_progress is not None and (
                every_rows or time.monotonic() - last_callback >= PROGRESS_CALLBACK_EVERY_S
            ):
                on_progress(tally, errors)
                last_callback = time.monotonic()
            if every_rows:
                logger.info(
                    sync_progress_line(
                        provider=provider,
                        tier=tier,
                        done=tally.total,
                        total=total,
                        counts=tally.counts.to_dict(),
                        tiers=tally.tiers,
                        elapsed_s=time.monotonic() - started,
                        cost_so_far_usd=tally.cost_usd(),
                    )
                )
    finally:
        if owns_client:
            await sdk_client.close()
    if on_progress is not None:
        on_progress(tally, errors)
    logger.info("%s %s done: %s; wire: %s", provider, tier, tally.summary(), executor.stats.to_dict())
    manifest = tally.manifest(
        results_uri=results_uri,
        provider=provider,
        model=(models[0] or None) if models else None,
        submitted_at=submitted_at,
        deadline=deadline_iso,
    )
    _report_budget(executor.budget, manifest, logger)
    return manifest


def _report_budget(budget: SpendMeter | None, manifest: dict[str, Any], logger: InfoLogger) -> None:
    """Put what the spend cap did in the manifest (and the log when it stopped the run)."""
    if budget is None:
        return
    if budget.stopped:
        logger.info(
            "max_cost_usd=%s reached: %d request(s) not sent (skipped_budget)", budget.cap, budget.skipped
        )
    manifest["budget"] = budget.report()


def run_sync_tier(
    rows: Iterable[Mapping[str, Any]],
    *,
    provider: str,
    tier: str,
    client: ClientSource,
    out: IO[bytes] | str | os.PathLike[str],
    results_uri: str | None = None,
    logger: InfoLogger | None = None,
    progress_every: int = DEFAULT_PROGRESS_EVERY,
    total: int | None = None,
    deadline_iso: str | None = None,
    on_progress: ProgressCallback | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run ``rows`` on ``tier`` from synchronous code and land them as JSONL; return the manifest.

    :param rows: normalized request rows (:func:`~airflow_provider_tokentier.core.requests.iter_validated`
        output; validate the whole workload first so a bad row fails before any paid call).
    :param provider: ``"openai"`` or ``"anthropic"``.
    :param tier: ``"flex"`` or ``"standard"``.
    :param client: an async SDK client, or a zero-argument callable (sync or async) returning
        one; a client made by the callable is built on the run's event loop and closed after it.
    :param out: a binary file object to write the rows to, or a local path (opened and closed here).
    :param results_uri: the URI recorded in the manifest (default: ``out``'s path or name).
    :param logger: where progress and the summary go (default: this module's logger).
    :param progress_every: log a progress line every this many rows (0: never).
    :param total: the number of rows, shown in progress lines when known.
    :param deadline_iso: recorded as the manifest's ``deadline``.
    :param on_progress: called with the running `ResultTally` and `ErrorSamples` at the start,
        every ``progress_every`` rows (and at least every :data:`PROGRESS_CALLBACK_EVERY_S`
        seconds while rows land) and at the end.
    :param options: :class:`SyncTierExecutor` options (``max_concurrency``, ``flex_patience``,
        ``on_unavailable``, ``non_flex_model``, ``flex_models``, ``request_timeout``,
        ``max_attempts``, ``backoff``, ``prices``, ``deadline``, ``endpoint``, ``round_``).

    The manifest has the batch sensor's keys: ``rounds`` 1, ``batches`` [], ``decision`` None,
    ``model`` the first request's model.
    """
    check_sync_tier_options(
        provider=provider,
        tier=tier,
        **{
            key: options[key]
            for key in (
                "max_concurrency",
                "flex_patience",
                "on_unavailable",
                "non_flex_model",
                "request_timeout",
                "max_attempts",
            )
            if key in options
        },
    )
    if isinstance(out, (str, os.PathLike)):
        uri = results_uri or os.fspath(out)
        with open(out, "wb") as handle:
            return asyncio.run(
                arun_sync_tier(
                    rows,
                    provider=provider,
                    tier=tier,
                    client=client,
                    out=handle,
                    results_uri=uri,
                    logger=logger,
                    progress_every=progress_every,
                    total=total,
                    deadline_iso=deadline_iso,
                    on_progress=on_progress,
                    **options,
                )
            )
    uri = results_uri or str(getattr(out, "name", "") or "")
    return asyncio.run(
        arun_sync_tier(
            rows,
            provider=provider,
            tier=tier,
            client=client,
            out=out,
            results_uri=uri,
            logger=logger,
            progress_every=progress_every,
            total=total,
            deadline_iso=deadline_iso,
            on_progress=on_progress,
            **options,
        )
    )


__all__ = [
    "DEFAULT_FLEX_PATIENCE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_CONCURRENCY",
    "FLEX_ENDPOINTS",
    "FLEX_NOT_AVAILABLE",
    "FLEX_REQUEST_TIMEOUT_S",
    "NON_FLEX_POLICIES",
    "ON_UNAVAILABLE_POLICIES",
    "RESOURCE_UNAVAILABLE",
    "SYNC_TIERS",
    "Backoff",
    "ExecutorStats",
    "NonFlexModelError",
    "SyncTierExecutor",
    "arun_sync_tier",
    "check_sync_tier_options",
    "retry_after_seconds",
    "run_sync_tier",
]
