"""`BatchTrigger`: one native-async wait over every batch of a round."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_tokentier.backends import async_batch_backend
from airflow_provider_tokentier.backends.base import BatchStatus, is_transient_error
from airflow_provider_tokentier.core.log_format import batch_progress_line
from airflow_provider_tokentier.hooks.base import provider_hook


class BatchTrigger(BaseTrigger):
    """Poll provider batches until all have ended, the deadline passes, or one is stuck.

    Serialized kwargs hold only ids, times and the ``conn_id`` -- never a secret: Airflow 3
    stores them in clear text. The connection is resolved inside `run`, and every trigger of
    one connection on the triggerer's loop shares one async SDK client.

    :param provider: "anthropic" or "openai".
    :param conn_id: Airflow connection id resolved in the triggerer.
    :param batch_ids: the batches to watch (one round of a workload).
    :param poll_interval: seconds between polls; each wait is jittered by +/-20% so a thousand
        waits do not poll in lockstep.
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
            },
        )

    async def _backend(self) -> Any:
        client = await provider_hook(self.provider, self.conn_id).get_async_client()
        return async_batch_backend(self.provider, client)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the batches until one ends, stalls or fails, then yield one event."""
        backend = await self._backend()
        watch = _StuckWatch(self.stuck_after)
        failures = 0
        last_progress_log = 0.0
        latest: dict[str, BatchStatus] = {}
        while True:
            now = time.time()
            if self.deadline is not None and now >= self.deadline:
                yield TriggerEvent(self._event("deadline", latest))
                return
            try:
                statuses = await asyncio.gather(*(backend.retrieve(b) for b in self.batch_ids))
            except Exception as exc:
                if not is_transient_error(exc):
                    yield TriggerEvent(
                        {**self._event("error", latest), "message": f"{type(exc).__name__}: {exc}"}
                    )
                    return
                failures += 1
                delay = min(self.poll_interval * 2 ** min(failures, 6), max(self.poll_interval, 900.0))
                self.log.warning(
                    "Transient error polling %s batches (%s: %s); retrying in %.0fs",
                    self.provider,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await self._sleep(delay)
                continue
            failures = 0
            latest = {s.batch_id: s for s in statuses}
            if all(s.ended for s in statuses):
                yield TriggerEvent(self._event("ended", latest))
                return
            stuck = watch.check(statuses, now)
            if stuck is not None:
                yield TriggerEvent({**self._event("stuck", latest), "message": stuck})
                return
            if now - last_progress_log >= self.progress_every:
                self.log.info(self.progress_line(statuses, now))
                last_progress_log = now
            await self._sleep(self.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        delay = seconds * random.uniform(0.8, 1.2)
        if self.deadline is not None:
            delay = max(0.0, min(delay, self.deadline - time.time()))
        await asyncio.sleep(delay)

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
        """A user marked the deferred task failed/success or cleared it: cancel the batches."""
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
