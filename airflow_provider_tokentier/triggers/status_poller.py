"""One status poller per (event loop, provider, connection), shared by every `BatchTrigger` on it.

A triggerer holding a thousand waits used to send a thousand ``retrieve`` calls per poll
interval. The poller reads the providers' list endpoints instead (newest first, 1,000 batches
per page on Anthropic, 100 on OpenAI), so one request answers many waits, and falls back to
``retrieve`` for watched batches the pages it read did not show (older ones, or a gap left by new
batches). When only a few batches are due, it retrieves just those: a page is not worth it.

Each trigger holds a `Watch` and asks it for the next statuses of its batches, fresh after its
own interval; it is woken earlier when a read shows one of its batches changed. Waits due at
about the same time are served by the same read, so their due times fall into step and one
cycle serves them all. Errors go only to the waits whose batches the failed call was for; the
poller keeps polling for everyone else. Triggers of different connections never share a poller
(keys, organizations and projects differ), and a poller stops and forgets itself when its last
watch closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from typing import Any

from airflow_provider_tokentier.backends import async_batch_backend
from airflow_provider_tokentier.backends.base import BatchStatus, is_transient_error
from airflow_provider_tokentier.backends.status_reads import StatusReader, status_reader
from airflow_provider_tokentier.hooks.base import provider_hook

__all__ = [
    "StatusPoller",
    "Watch",
    "active_pollers",
    # What BatchTrigger takes from here, so its own module imports nothing heavy.
    "async_batch_backend",
    "is_transient_error",
    "provider_hook",
    "status_poller",
]

_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], StatusPoller]] = (
    weakref.WeakKeyDictionary()
)

#: A wait due within this share of its own interval is served by a list read happening now,
#: which puts waits of one interval into step after a cycle or two.
EARLY_SHARE = 0.5

#: Waits woken per loop iteration. Each woken trigger runs its checks (and may log) before the
#: loop gets back to anything else: a thousand at once would stall it for tens of milliseconds.
WAKE_SLICE = 20


class Watch:
    """One trigger's view of the poller: ``await next(after)`` for its batches' statuses."""

    def __init__(self, poller: StatusPoller, batch_ids: Iterable[str]) -> None:
        self.poller = poller
        self.batch_ids = tuple(dict.fromkeys(batch_ids))
        #: What the trigger last received, per batch (the poller compares to spot changes).
        self.delivered: dict[str, BatchStatus] = {}
        self.due_at = 0.0
        self.after = 0.0
        #: When the read behind the last delivery started (the next one is due an interval later).
        self.read_at: float | None = None
        self.waiter: asyncio.Future[dict[str, BatchStatus]] | None = None
        #: Ends the waiter with a TimeoutError at the caller's deadline, if it gave one.
        self.give_up: asyncio.TimerHandle | None = None
        self.closed = False
        #: Statuses handed to the trigger so far.
        self.deliveries = 0

    def next(
        self, after: float, give_up_after: float | None = None
    ) -> asyncio.Future[dict[str, BatchStatus]]:
        """The statuses of every watched batch, read no later than ``after`` seconds from now.

        Resolves sooner when a read shows one of them changed. Raises the provider's error when
        the read for one of them failed (the caller decides whether to back off or give up), and
        `asyncio.TimeoutError` when ``give_up_after`` seconds pass first (a deadline).

        A plain future, not a coroutine: a wait awaits one of these per poll, and ten thousand
        waits would otherwise leave ten thousand coroutine chains per cycle for the garbage
        collector to walk.
        """
        return self.poller.wait(self, after, give_up_after)

    def close(self) -> None:
        """Leave the poller (idempotent); the last watch to leave stops it."""
        if not self.closed:
            self.closed = True
            self.poller.leave(self)

    @property
    def waiting(self) -> bool:
        """Whether the trigger is awaiting its next statuses."""
        return self.waiter is not None and not self.waiter.done()


def status_poller(provider: str, conn_id: str | None) -> StatusPoller:
    """The poller of ``provider`` and ``conn_id`` on the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    per_loop = _POLLERS.setdefault(loop, {})
    key = (provider, conn_id or "")
    poller = per_loop.get(key)
    if poller is None:
        poller = per_loop[key] = StatusPoller(provider, conn_id, forget=lambda: per_loop.pop(key, None))
    return poller


def active_pollers() -> dict[tuple[str, str], StatusPoller]:
    """The pollers running on the current loop (for tests and diagnostics)."""
    return dict(_POLLERS.get(asyncio.get_running_loop(), {}))


class StatusPoller:
    """Reads the statuses of every batch its watches follow, in as few provider calls as it can."""

    def __init__(self, provider: str, conn_id: str | None, *, forget: Any = None) -> None:
        self.provider = provider
        self.conn_id = conn_id
        self._forget = forget
        self._watches: set[Watch] = set()
        self._watchers: Counter[str] = Counter()
        #: Last record read per watched batch and the status built from it.
        self._latest: dict[str, tuple[Any, BatchStatus]] = {}
        #: The listing's page boundaries seen last cycle, to read the next cycle's pages at once.
        self._cursors: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reader: StatusReader | None = None
        #: Provider calls and statuses delivered so far (benchmarks and tests read these).
        self.calls: Counter[str] = Counter()
        self.cycles = 0
        self.deliveries = 0

    # -- watches -------------------------------------------------------------------------------
    def watches(self) -> list[Watch]:
        """The open watches (for benchmarks and diagnostics)."""
        return list(self._watches)

    def watch(self, batch_ids: Iterable[str]) -> Watch:
        """Follow ``batch_ids`` until the returned watch is closed."""
        watch = Watch(self, batch_ids)
        self._watches.add(watch)
        self._watchers.update(watch.batch_ids)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"tokentier-{self.provider}-poller"
            )
        return watch

    def leave(self, watch: Watch) -> None:
        """Forget ``watch`` (see `Watch.close`); stop and forget the poller when it was the last."""
        if watch not in self._watches:
            return
        self._watches.discard(watch)
        _stop_give_up(watch)
        if watch.waiting:
            assert watch.waiter is not None
            watch.waiter.cancel()
        self._watchers.subtract(watch.batch_ids)
        for batch_id in watch.batch_ids:
            if self._watchers[batch_id] <= 0:
                del self._watchers[batch_id]
                self._latest.pop(batch_id, None)
        if not self._watches:
            if self._task is not None and self._task is not _current_task():
                self._task.cancel()
            self._task = None
            if self._forget is not None:
                self._forget()
        self._wake.set()

    def wait(
        self, watch: Watch, after: float, give_up_after: float | None = None
    ) -> asyncio.Future[dict[str, BatchStatus]]:
        """What `Watch.next` does: statuses read no later than ``after`` seconds from now."""
        if watch.closed:
            raise RuntimeError("this watch is closed")
        loop = asyncio.get_running_loop()
        watch.waiter = loop.create_future()
        known = self._snapshot(watch)
        if known is not None and watch.delivered and self._changed(watch, known):
            self._deliver(watch, known)
            return watch.waiter
        watch.after = max(after, 0.0)
        watch.due_at = (watch.read_at or time.monotonic()) + watch.after
        if give_up_after is not None:
            timeout = asyncio.TimeoutError()
            watch.give_up = loop.call_later(max(give_up_after, 0.0), self._fail, watch, timeout)
        self._wake.set()
        return watch.waiter

    # -- the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while self._watches:
            now = time.monotonic()
            waiting = [w for w in self._watches if w.waiting]
            due = [w for w in waiting if w.due_at <= now]
            if not due:
                next_at = min((w.due_at for w in waiting), default=math.inf)
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if next_at == math.inf else next_at - now)
                continue
            try:
                await self._cycle(now, waiting, due)
            except Exception as exc:  # a bug here must not leave every wait hanging
                for watch in due:
                    self._fail(watch, exc)

    async def _cycle(self, now: float, waiting: list[Watch], due: list[Watch]) -> None:
        self.cycles += 1
        try:
            reader = await self._get_reader()
        except Exception as exc:
            for watch in due:
                self._fail(watch, exc)
            return
        wanted = {b for w in due for b in w.batch_ids}
        served = set(due)
        if len(wanted) > self._pages_to_cover():
            early = [w for w in waiting if w not in served and w.due_at - now <= w.after * EARLY_SHARE]
            served.update(early)
            wanted.update(b for w in early for b in w.batch_ids)
            fresh, errors = await self._read_listing(reader, wanted)
        else:
            fresh, errors = await self._retrieve(reader, wanted)
        woken = 0
        for watch in waiting:
            if watch.waiting and self._answer(watch, watch in served, fresh, errors, now):
                woken += 1
                if woken % WAKE_SLICE == 0:
                    await asyncio.sleep(0)  # let the woken triggers (and everything else) run

    def _answer(
        self, watch: Watch, served: bool, fresh: set[str], errors: dict[str, BaseException], read_at: float
    ) -> bool:
        """Wake ``watch`` if it asked for this read or its batches changed; True when woken."""
        failed = next((errors[b] for b in watch.batch_ids if b in errors), None)
        if served and failed is not None:
            watch.read_at = None  # a back-off counts from now
            self._fail(watch, failed)
            return True
        snapshot = self._snapshot(watch)
        if snapshot is None:
            return False
        if served or (fresh.intersection(watch.batch_ids) and self._changed(watch, snapshot)):
            watch.read_at = read_at
            self._deliver(watch, snapshot)
            return True
        return False

    def _pages_to_cover(self) -> int:
        """List pages needed to see every watched batch once (if they are the newest)."""
        page_size = self._reader.page_size if self._reader is not None else 100
        return max(1, math.ceil(len(self._watchers) / page_size))

    # -- reads ---------------------------------------------------------------------------------
    async def _read_listing(
        self, reader: StatusReader, wanted: set[str]
    ) -> tuple[set[str], dict[str, BaseException]]:
        """Read list pages until every wanted batch showed up (or the budget is spent).

        The watched batches the pages did not show are retrieved one by one.
        """
        budget = self._pages_to_cover() + 1
        starts: list[str | None] = [None, *self._cursors[: budget - 1]]
        seen: set[str] = set()
        order: list[str] = []
        pages = await asyncio.gather(*(self._page(reader, after) for after in starts), return_exceptions=True)
        head = pages[0]
        if isinstance(head, BaseException):
            # The listing itself fails (outage, auth): a retrieve per batch would fail alike.
            self._cursors = []
            return set(), dict.fromkeys(wanted, head)
        last: tuple[str | None, bool] = (None, False)

        def take(page: Any) -> tuple[str | None, bool]:
            """Keep the page's batches not seen yet (pages can overlap); its cursor and has_more."""
            for record in page.records:
                if record.id not in seen:
                    seen.add(record.id)
                    order.append(record.id)
                    self._store(reader, record)
            return page.last_id, page.has_more

        for page in pages:
            if isinstance(page, BaseException):
                continue  # a stale cursor; its batches are retrieved below
            last = take(page)
        used = len(pages)
        while last[1] and last[0] is not None and used < budget and not wanted <= seen:
            try:
                page = await self._page(reader, last[0])
            except Exception:
                break
            used += 1
            last = take(page)
        # Next cycle reads every page at once, starting from these (the last page needs none).
        self._cursors = order[reader.page_size - 1 :: reader.page_size]
        if not last[1] and self._cursors and self._cursors[-1] == order[-1]:
            self._cursors.pop()
        fresh = seen & self._watchers.keys()
        retrieved, errors = await self._retrieve(reader, wanted - seen)
        return fresh | retrieved, errors

    async def _page(self, reader: StatusReader, after: str | None) -> Any:
        self.calls["list"] += 1
        return await reader.page(after)

    async def _retrieve(
        self, reader: StatusReader, batch_ids: set[str]
    ) -> tuple[set[str], dict[str, BaseException]]:
        ids = sorted(batch_ids)
        self.calls["retrieve"] += len(ids)
        results = await asyncio.gather(*(reader.retrieve(b) for b in ids), return_exceptions=True)
        fresh: set[str] = set()
        errors: dict[str, BaseException] = {}
        for batch_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                errors[batch_id] = result
            else:
                self._store(reader, result)
                fresh.add(batch_id)
        return fresh, errors

    def _store(self, reader: StatusReader, record: Any) -> None:
        batch_id = record.id
        if batch_id not in self._watchers:
            return
        previous = self._latest.get(batch_id)
        if previous is None or previous[0] != record:
            self._latest[batch_id] = (record, reader.status(record))

    async def _get_reader(self) -> StatusReader:
        if self._reader is None:
            client = await provider_hook(self.provider, self.conn_id).get_async_client()
            self._reader = status_reader(self.provider, client)
        return self._reader

    # -- delivery ------------------------------------------------------------------------------
    def _snapshot(self, watch: Watch) -> dict[str, BatchStatus] | None:
        """The latest status of each of the watch's batches; None until every one was read.

        When none changed, the mapping delivered last time is handed out again: a steady wait
        then allocates nothing per poll that outlives the poll.
        """
        latest = self._latest
        if not all(b in latest for b in watch.batch_ids):
            return None
        delivered = watch.delivered
        if len(delivered) == len(watch.batch_ids) and all(
            delivered.get(b) is latest[b][1] for b in watch.batch_ids
        ):
            return delivered
        return {b: latest[b][1] for b in watch.batch_ids}

    @staticmethod
    def _changed(watch: Watch, snapshot: dict[str, BatchStatus]) -> bool:
        return any(watch.delivered.get(b) is not status for b, status in snapshot.items())

    def _deliver(self, watch: Watch, snapshot: dict[str, BatchStatus]) -> None:
        watch.delivered = snapshot
        watch.deliveries += 1
        self.deliveries += 1
        if watch.waiting:
            assert watch.waiter is not None
            _stop_give_up(watch)
            watch.waiter.set_result(snapshot)

    @staticmethod
    def _fail(watch: Watch, exc: BaseException) -> None:
        if watch.waiting:
            assert watch.waiter is not None
            _stop_give_up(watch)
            watch.waiter.set_exception(exc)


def _stop_give_up(watch: Watch) -> None:
    if watch.give_up is not None:
        watch.give_up.cancel()
        watch.give_up = None


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a generator finalized at shutdown
        return None
