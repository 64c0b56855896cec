"""`BatchTrigger`: one native-async wait over every batch of a round.

This module imports nothing heavy: the triggerer imports it on its event loop, so the SDKs and
the status poller are imported on a worker thread the first time a trigger runs.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import importlib
import random
import time
import weakref
from collections.abc import AsyncIterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_tokentier.core.log_format import batch_progress_line

if TYPE_CHECKING:
    from airflow_provider_tokentier.backends.base import BatchStatus

_POLLER_MODULE = "airflow_provider_tokentier.triggers.status_poller"


async def _poller_module() -> ModuleType:
    """The status poller module, imported off the loop (it pulls in both provider SDKs).

    The pending import is shared: a thousand triggers starting together wait for one import.
    """
    loop = asyncio.get_running_loop()
    pending = _importing.get(loop)
    if pending is None:
        _HEAP.freeze_once("airflow")
        pending = _importing[loop] = asyncio.ensure_future(asyncio.to_thread(_import_poller_module))
    try:
        return await asyncio.shield(pending)
    except BaseException:
        if pending.done() and _importing.get(loop) is pending:
            del _importing[loop]  # let the next trigger try again
        raise


def _import_poller_module() -> ModuleType:
    module = importlib.import_module(_POLLER_MODULE)
    _HEAP.freeze_once("sdks")
    return module


class _StartupHeap:
    """Moves the triggerer's long-lived heap out of the garbage collector's sight, once per part.

    A triggerer holds Airflow, both SDKs and their modules: hundreds of thousands of long-lived
    objects that every full collection walks again. The allocations of a thousand waits starting
    set off such collections, and each one stalled the loop for 0.2-0.7 s (measured by
    `bench.triggers`). `gc.freeze` moves the objects alive now into the permanent generation
    (what Airflow's dag processor and LocalExecutor do before forking), so later collections walk
    only what was created since. It runs twice per process: at the first trigger's first step,
    before the waits allocate anything (Airflow's heap), and after the SDKs were imported (their
    heap). What is frozen is never collected: the waits alive at the second freeze keep any
    reference cycle they leave behind, once, when they end.
    """

    def __init__(self) -> None:
        self._frozen: set[str] = set()

    def freeze_once(self, part: str) -> None:
        if part not in self._frozen:
            self._frozen.add(part)
            # No gc.collect() first: that full pass is the very stall this avoids.
            gc.freeze()


_HEAP = _StartupHeap()

_importing: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[ModuleType]] = (
    weakref.WeakKeyDictionary()
)

#: Seconds of consecutive transient poll errors (429/5xx/connection) a wait rides out by default.
DEFAULT_POLL_ERROR_PATIENCE_S = 3600.0


class BatchTrigger(BaseTrigger):
    """Poll provider batches until all have ended, the deadline passes, or one is stuck.

    Serialized kwargs hold only ids, times and the ``conn_id`` -- never a secret: Airflow 3
    stores them in clear text. The connection is resolved inside `run`, and every trigger of
    one connection on the triggerer's loop shares one async SDK client and one status poller
    (`status_poller.StatusPoller`), which reads list pages for all of them at once.

    :param provider: "anthropic" or "openai".
    :param conn_id: Airflow connection id resolved in the triggerer.
    :param batch_ids: the batches to watch (one round of a workload).
    :param poll_interval: seconds between fresh statuses; the wait wakes sooner when a read
        shows one of its batches changed. Transient errors back off (jittered, doubling).
    :param deadline: absolute unix time at which the wait ends with a ``deadline`` event, or
        None. Absolute, so a triggerer restart does not restart it.
    :param stuck_after: seconds a batch may sit in finalizing/canceling, or show no progress,
        before the wait ends with a ``stuck`` event; None disables the check.
    :param progress_every: seconds between progress lines in the task log.
    :param round_: the round these batches belong to (0-based), for progress lines.
    :param max_rounds: the workload's round limit, for progress lines.
    :param started_at: unix time the workload was submitted, for the elapsed time.
    :param expected_finish: ``{"p50", "p95"}`` ISO times this round should end by, from the
        provider/model's turnaround history.
    :param cost_so_far_usd: what the rows harvested in earlier rounds cost.
    :param timeout_at: absolute unix time at which the wait gives up with a ``timeout`` event
        (the sensor's ``timeout``), or None. Airflow's deferral timeout backs it up.
    :param poll_error_patience: seconds of consecutive transient poll errors (429, 5xx,
        connection errors) to ride out with back-off; then the wait ends with an ``error``
        event naming the provider, the batches and the last error.
    """

    def __init__(
        self,
        *,
        provider: str,
        conn_id: str | None,
        batch_ids: list[str],
        poll_interval: float = 60.0,
        deadline: float | None = None,
        stuck_after: float | None = 6 * 3600.0,
        progress_every: float = 300.0,
        round_: int | None = None,
        max_rounds: int | None = None,
        started_at: float | None = None,
        expected_finish: dict[str, str] | None = None,
        cost_so_far_usd: float | None = None,
        timeout_at: float | None = None,
        poll_error_patience: float = DEFAULT_POLL_ERROR_PATIENCE_S,
    ) -> None:
        super().__init__()
        self.provider = provider
        self.conn_id = conn_id
        self.batch_ids = list(batch_ids)
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.stuck_after = stuck_after
        self.progress_every = progress_every
        self.round_ = round_
        self.max_rounds = max_rounds
        self.started_at = started_at
        self.expected_finish = expected_finish
        self.cost_so_far_usd = cost_so_far_usd
        self.timeout_at = timeout_at
        self.poll_error_patience = poll_error_patience

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The classpath and keyword arguments that rebuild this trigger (no secrets: a conn_id)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "provider": self.provider,
                "conn_id": self.conn_id,
                "batch_ids": self.batch_ids,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "stuck_after": self.stuck_after,
                "progress_every": self.progress_every,
                "round_": self.round_,
                "max_rounds": self.max_rounds,
                "started_at": self.started_at,
                "expected_finish": self.expected_finish,
                "cost_so_far_usd": self.cost_so_far_usd,
                "timeout_at": self.timeout_at,
                "poll_error_patience": self.poll_error_patience,
            },
        )

    async def _backend(self) -> Any:
        poller = await _poller_module()
        client = await poller.provider_hook(self.provider, self.conn_id).get_async_client()
        return poller.async_batch_backend(self.provider, client)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the batches until one ends, stalls or fails, then yield one event."""
        poller = await _poller_module()
        watch = poller.status_poller(self.provider, self.conn_id).watch(self.batch_ids)
        try:
            event = await self._wait(watch, poller.is_transient_error)
        finally:
            # On an event, a cancellation (the task was cleared or marked) or a triggerer
            # shutdown alike: the other waits on the poller keep polling.
            watch.close()
        yield event

    async def _wait(self, watch: Any, is_transient_error: Any) -> TriggerEvent:
        """Follow the statuses until the wait ends; return the event that ends it."""
        stuck_watch = _StuckWatch(self.stuck_after)
        errors = _ErrorStreak(self.poll_error_patience)
        last_progress_log = 0.0
        latest: dict[str, BatchStatus] = {}
        delay = 0.0
        while True:
            if self.deadline is not None and time.time() >= self.deadline:
                return TriggerEvent(self._event("deadline", latest))
            if self.timeout_at is not None and time.time() >= self.timeout_at:
                return TriggerEvent({**self._event("timeout", latest), "message": self._timeout_message()})
            try:
                fresh = await self._next(watch, delay)
            except asyncio.TimeoutError:
                continue  # the deadline came first
            except Exception as exc:
                if not is_transient_error(exc):
                    return TriggerEvent(self._error_event(latest, f"{type(exc).__name__}: {exc}"))
                backoff = errors.failed(exc, time.time(), self.poll_interval)
                if backoff is None:
                    return TriggerEvent(self._error_event(latest, errors.give_up_message()))
                delay = backoff * random.uniform(0.8, 1.2)
                self.log.warning(
                    "Transient error polling %s batches (%s: %s); retrying in %.0fs",
                    self.provider,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                continue
            errors.reset()
            now = time.time()
            latest = fresh
            log_progress = now - last_progress_log >= self.progress_every
            event = self._check(fresh, stuck_watch, now, log_progress)
            if event is not None:
                return event
            if log_progress:
                last_progress_log = now
            delay = self.poll_interval

    def _check(
        self, fresh: dict[str, BatchStatus], stuck_watch: _StuckWatch, now: float, log_progress: bool
    ) -> TriggerEvent | None:
        """The event that ends the wait on these statuses, if any; logs progress when asked.

        Its own method so the list it builds dies before the wait sleeps again: ten thousand
        waits each keeping one alive across a poll is what the garbage collector then walks.
        """
        statuses = [fresh[b] for b in self.batch_ids]
        if all(s.ended for s in statuses):
            return TriggerEvent(self._event("ended", fresh))
        stuck = stuck_watch.check(statuses, now)
        if stuck is not None:
            return TriggerEvent({**self._event("stuck", fresh), "message": stuck})
        if log_progress:
            self.log.info(self.progress_line(statuses, now))
        return None

    def _next(self, watch: Any, delay: float) -> asyncio.Future[dict[str, BatchStatus]]:
        """The next statuses from the poller, giving up (TimeoutError) at the deadline."""
        limits = [at for at in (self.deadline, self.timeout_at) if at is not None]
        return watch.next(delay, min(limits) - time.time() if limits else None)

    def _timeout_message(self) -> str:
        return (
            f"timed out waiting for {self.provider} batches {self.batch_ids} "
            f"(timeout reached at {_iso(self.timeout_at)}); the batches keep running at the provider"
        )

    def _error_event(self, latest: dict[str, BatchStatus], reason: str) -> dict[str, Any]:
        message = f"polling {self.provider} batches {self.batch_ids} failed: {reason}"
        return {**self._event("error", latest), "message": message}

    def _event(self, status: str, latest: dict[str, BatchStatus]) -> dict[str, Any]:
        # Small on purpose: the sensor re-reads details from the provider and its ledger.
        return {
            "status": status,
            "provider": self.provider,
            "batches": [latest[b].to_dict() for b in self.batch_ids if b in latest],
        }

    def progress_line(self, statuses: list[BatchStatus], now: float) -> str:
        """This wait's progress line: round, batches ended, counts per outcome, times, cost so far."""
        totals: dict[str, int] = {}
        for status in statuses:
            for key, value in status.counts.items():
                totals[key] = totals.get(key, 0) + value
        return batch_progress_line(
            provider=self.provider,
            round_=self.round_,
            max_rounds=self.max_rounds,
            batches_ended=sum(1 for s in statuses if s.ended),
            batches_total=len(statuses),
            counts=totals,
            elapsed_s=None if self.started_at is None else now - self.started_at,
            expected_finish=self.expected_finish,
            cost_so_far_usd=self.cost_so_far_usd,
        )

    async def on_kill(self) -> None:
        """A user marked the deferred task failed/success or cleared it: cancel the batches.

        Airflow calls this from 3.3 on; the 3.1 triggerer never does (its ``cleanup`` also runs on
        a triggerer restart, when the batches must live on), so there the batches keep running.
        """
        backend = await self._backend()
        results = await asyncio.gather(*(backend.cancel(b) for b in self.batch_ids), return_exceptions=True)
        for batch_id, result in zip(self.batch_ids, results, strict=True):
            if isinstance(result, BaseException):
                self.log.warning("Could not cancel %s batch %s: %s", self.provider, batch_id, result)
            else:
                self.log.info("Cancelled %s batch %s", self.provider, batch_id)


def _progress_is_visible(status: BatchStatus) -> bool:
    # Anthropic reports no per-request progress until a batch ends, so an in-progress
    # Anthropic batch cannot be told apart from a stuck one; its 24 h expiry bounds it.
    if status.ended:
        return False
    return status.phase in ("finalizing", "canceling") or status.provider == "openai"


class _ErrorStreak:
    """Consecutive transient poll errors: the back-off before the next poll, or when to give up."""

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self.count = 0
        self.since: float | None = None
        self.last: BaseException | None = None

    def failed(self, exc: BaseException, now: float, poll_interval: float) -> float | None:
        """Record a failure; seconds to wait before polling again, or None when patience is spent."""
        self.count += 1
        self.last = exc
        if self.since is None:
            self.since = now
        left = self.since + self.patience - now
        if left <= 0:
            return None
        backoff = min(poll_interval * 2 ** min(self.count, 6), max(poll_interval, 900.0))
        return min(backoff, left)

    def give_up_message(self) -> str:
        return (
            f"{self.count} consecutive transient errors over {self.patience:.0f}s "
            f"(poll_error_patience); last error: {type(self.last).__name__}: {self.last}"
        )

    def reset(self) -> None:
        self.count, self.since, self.last = 0, None, None


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat()


class _StuckWatch:
    """Remembers when each batch last changed, to spot batches that stopped moving."""

    def __init__(self, stuck_after: float | None) -> None:
        self.stuck_after = stuck_after
        self._since: dict[str, tuple[tuple[Any, ...], float]] = {}

    def check(self, statuses: list[BatchStatus], now: float) -> str | None:
        if self.stuck_after is None:
            return None
        for status in statuses:
            if not _progress_is_visible(status):
                continue
            signature = (status.phase, tuple(sorted(status.counts.items())))
            previous = self._since.get(status.batch_id)
            if previous is None or previous[0] != signature:
                self._since[status.batch_id] = (signature, now)
                continue
            still_for = now - previous[1]
            if still_for >= self.stuck_after:
                return (
                    f"batch {status.batch_id} has been {status.phase} with no progress for "
                    f"{still_for:.0f}s (stuck_after={self.stuck_after:.0f}s)"
                )
        return None
