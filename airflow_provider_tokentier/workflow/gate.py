"""The sensor's engine: harvest ended batches, re-batch what needs it, land one row per request.

Everything it learns is written to the sensor's own state directory before it acts on it, so a
retry, a clear or a triggerer restart resumes where the last step ended:

* ``outcomes/rNN/{batch_id}.jsonl`` -- result rows for every request of one ended batch,
  written once (harvest is idempotent);
* ``rounds/rNN/*.jsonl`` + ledger -- the requests of each re-batch round and their batches;
* ``results.jsonl`` (or ``results_uri``) -- the landed rows, rebuilt from outcomes on demand.
"""

from __future__ import annotations

import bisect
import datetime
import itertools
import logging
import os
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.backends.base import BatchBackend, BatchStatus
from airflow_provider_tokentier.core.budget import SKIPPED_BUDGET, check_within_cap, estimate_rows_cost
from airflow_provider_tokentier.core.chunking import DEFAULT_SAFETY_MARGIN
from airflow_provider_tokentier.core.jsonl import loads_line
from airflow_provider_tokentier.core.pricing import PriceTable
from airflow_provider_tokentier.core.progress import ErrorSamples
from airflow_provider_tokentier.core.records import check_schema_version
from airflow_provider_tokentier.core.result_rows import BatchRows, LandedRow, ResultTally, make_error
from airflow_provider_tokentier.core.wire_ids import MAX_VERBATIM_ID, from_wire
from airflow_provider_tokentier.state.blockio import copy_blocks, iter_blocks, iter_lines, open_block_writer
from airflow_provider_tokentier.state.ledger import Ledger, storage_path
from airflow_provider_tokentier.state.row_heads import RowHead, iter_row_heads
from airflow_provider_tokentier.workflow.submission import (
    SubmittedBatch,
    submit_chunks,
    write_chunks,
)

log = logging.getLogger(__name__)

REBATCH_POLICIES = ("none", "expired", "expired+retryable")


class _PayloadHead(msgspec.Struct, gc=False):
    model: str | None = None


class _RequestHead(msgspec.Struct, gc=False):
    """Only what harvesting needs from a request line; msgspec skips the rest unparsed."""

    custom_id: str
    params: _PayloadHead | None = None
    body: _PayloadHead | None = None

    @property
    def model(self) -> str | None:
        """The requested model (Anthropic ``params`` or OpenAI ``body``)."""
        payload = self.params or self.body
        return payload.model if payload else None


_request_decoder = msgspec.json.Decoder(_RequestHead)


def request_ids(uri: str | None) -> Iterator[tuple[str, str | None, bytes]]:
    """(custom_id, model, raw line) for every request line of a chunk file."""
    if uri is None:
        raise ValueError("this batch was submitted outside tokentier; its requests are unknown")
    for line in iter_lines(storage_path(uri)):
        head = _request_decoder.decode(line)
        yield head.custom_id, head.model, line.rstrip(b"\n")


def _request_heads(uri: str) -> Iterator[list[_RequestHead]]:
    """The heads of a chunk file's request lines, a block at a time (blank lines skipped)."""
    tail = b""
    for block in iter_blocks(storage_path(uri)):
        block = tail + block if tail else block
        cut = block.rfind(b"\n") + 1
        tail = block[cut:]
        if cut:
            yield _request_decoder.decode_lines(memoryview(block)[:cut])
    if tail.strip():
        yield _request_decoder.decode_lines(tail)


class _RequestIndex:
    """The custom_ids of one request file in ~10 bytes each, so harvest memory stays flat.

    A sorted array of 64-bit string hashes (process-local ``hash``: the index never leaves the
    process) with the model of each id and a seen-flag; ids themselves are re-read from the
    file when the unseen ones are needed. A dict of 100,000 ids would cost ~10 MB.
    """

    def __init__(self, uri: str | None) -> None:
        self.uri = uri
        model_numbers: dict[str | None, int] = {}
        hashes = array("Q")
        model_of = array("H")
        #: Ids too long to travel verbatim in a wire id, by chunk line (see core.wire_ids).
        self.long_ids: dict[int, str] = {}
        line_number = 0
        for heads in _request_heads(uri) if uri is not None else ():
            ids = [head.custom_id for head in heads]
            if max(map(len, ids), default=0) > MAX_VERBATIM_ID:
                self.long_ids.update(
                    (line_number + i, custom_id)
                    for i, custom_id in enumerate(ids)
                    if len(custom_id) > MAX_VERBATIM_ID
                )
            line_number += len(ids)
            hashes.extend([hash(custom_id) & _HASH_MASK for custom_id in ids])
            model_of.extend([model_numbers.setdefault(head.model, len(model_numbers)) for head in heads])
        if len(model_numbers) > 1:
            order = sorted(range(len(hashes)), key=hashes.__getitem__)
            self._hashes = array("Q", (hashes[i] for i in order))
            self._model_of = array("H", (model_of[i] for i in order))
        else:  # one model (the usual case): every model number is 0, so only the hashes need sorting
            self._hashes = array("Q", sorted(hashes))
            self._model_of = model_of
        # Where each bucket of hashes (by their top bits; about one hash per bucket) starts in
        # the sorted array, so a lookup bisects its bucket instead of the whole array.
        self._shift = 64 - max(1, len(hashes).bit_length())
        bucket_sizes = [0] * ((1 << (64 - self._shift)) + 1)
        for key in self._hashes:
            bucket_sizes[(key >> self._shift) + 1] += 1
        self._starts = array("I", itertools.accumulate(bucket_sizes))
        #: The requested models, numbered as `take` returns them.
        self.models = list(model_numbers)
        self._seen = bytearray(len(hashes))
        self._taken = 0
        self.first_model = self.models[0] if self.models else None

    def _position(self, custom_id: str) -> int | None:
        key = hash(custom_id) & _HASH_MASK
        bucket = key >> self._shift
        end = self._starts[bucket + 1]
        at = bisect.bisect_left(self._hashes, key, self._starts[bucket], end)
        return at if at < end and self._hashes[at] == key else None

    def take(self, custom_id: str) -> int:
        """Mark a requested id seen and return the number of its requested model in `models`.

        `UNKNOWN_ID` for an id never requested, `REPEATED_ID` for one taken before. (Numbers
        rather than a tuple: a tuple per result row kept the garbage collector busy.)
        """
        # `_position` spelled out: this runs for every result line.
        key = hash(custom_id) & _HASH_MASK
        bucket = key >> self._shift
        end = self._starts[bucket + 1]
        at = bisect.bisect_left(self._hashes, key, self._starts[bucket], end)
        if at == end or self._hashes[at] != key:
            return UNKNOWN_ID
        if self._seen[at]:
            return REPEATED_ID
        self._seen[at] = 1
        self._taken += 1
        return self._model_of[at]

    def own_id(self, scope: str | None, wire_id: str) -> str | None:
        """The user's custom_id behind a result's ``wire_id``; None when it was not sent under ``scope``."""
        if scope is None:
            return wire_id
        found = from_wire(scope, wire_id)
        if isinstance(found, int):
            return self.long_ids.get(found)
        if found is not None and len(found) > MAX_VERBATIM_ID:
            return None
        return found

    def unseen(self) -> Iterator[tuple[str, str | None]]:
        """(custom_id, model) of every requested id not taken yet, in file order."""
        # Usually every id was taken: then the request file is not read again.
        if self.uri is None or self._taken == len(self._seen):
            return
        for custom_id, model, _line in request_ids(self.uri):
            at = self._position(custom_id)
            if at is not None and not self._seen[at]:
                yield custom_id, model

    def mark_all_seen(self) -> None:
        self._seen = bytearray(b"\x01" * len(self._seen))
        self._taken = len(self._seen)


_HASH_MASK = (1 << 64) - 1
#: What `_RequestIndex.take` returns for an id the chunk never sent, and for one already taken.
UNKNOWN_ID = -1
REPEATED_ID = -2


def _is_foreign_batch(batch: SubmittedBatch, dropped: Mapping[str, int]) -> bool:
    """A task-scoped batch whose every result line was foreign: another task's batch."""
    return batch.id_scope is not None and dropped.get("own", 0) == 0 and dropped.get("foreign", 0) > 0


@dataclass
class GateSettings:
    """How the sensor treats outcomes; fixed for the life of one task instance."""

    provider: str
    rebatch: str = "expired"
    max_rounds: int = 3
    prices: PriceTable | None = None
    caps: Mapping[str, int | None] | None = None
    safety_margin: float = DEFAULT_SAFETY_MARGIN


class BatchGate:
    """Harvest, re-batch and land one workload's batches, driven by the sensor."""

    def __init__(
        self,
        *,
        manifest: Mapping[str, Any],
        state_dir: ObjectStoragePath,
        settings: GateSettings,
        task_key: str,
    ) -> None:
        check_schema_version(manifest, "submission manifest")
        self.manifest = manifest
        self.state_dir = state_dir
        self.settings = settings
        self.task_key = task_key
        self.ledger = Ledger(state_dir)

    # -- rounds --------------------------------------------------------------------------------
    def batches_of(self, round_: int) -> list[SubmittedBatch]:
        """The batches of round ``round_``: round 0 from the manifest, later rounds from the ledger."""
        if round_ == 0:
            return [
                SubmittedBatch.from_dict({**b, "chunk": b.get("chunk", i)})
                for i, b in enumerate(self.manifest["batches"])
            ]
        return [SubmittedBatch.from_dict(b) for b in self.ledger.batches(round_)]

    def current_round(self) -> int:
        """The last round started (0 before any re-batch)."""
        round_ = 0
        while self.ledger.read(f"round-{round_ + 1:02d}") is not None:
            round_ += 1
        return round_

    def all_batches(self) -> list[SubmittedBatch]:
        """Every batch of every round, in round order."""
        return [b for r in range(self.current_round() + 1) for b in self.batches_of(r)]

    # -- harvest -------------------------------------------------------------------------------
    def outcome_path(self, batch: SubmittedBatch) -> ObjectStoragePath:
        """Where the harvested result rows of ``batch`` live."""
        return self.state_dir / "outcomes" / f"r{batch.round:02d}" / f"{batch.id}.jsonl"

    def is_harvested(self, batch: SubmittedBatch) -> bool:
        """Whether ``batch``'s result rows are already written."""
        return self.outcome_path(batch).exists()

    def harvest(self, batch: SubmittedBatch, status: BatchStatus, backend: BatchBackend) -> None:
        """Write one result row per request of an ended batch (once; later calls reuse it).

        The batch's totals go to the ledger beside it, so landing can copy the file whole
        instead of decoding every row again.

        The results must belong to this chunk: a line whose custom_id this chunk did not send
        (another task's, a repeat, one never sent) is dropped and counted, never landed. A
        task-scoped batch (see :mod:`core.wire_ids`) none of whose lines is this chunk's is
        another task's batch, adopted by mistake: it is disowned, and its requests land as
        ``missing`` (``foreign_batch``), so the re-batch policy sends them again.
        """
        target = self.outcome_path(batch)
        if target.exists():
            return
        tally = ResultTally()
        errors = ErrorSamples()
        # One pricing day for the whole batch: looking up "today" twice per row cost more than
        # pricing it, and a batch's rows should not straddle two price lists at midnight.
        day = datetime.datetime.now(datetime.timezone.utc).date()
        index = _RequestIndex(batch.uri)
        fallback_model = index.first_model or "unknown"
        rows = BatchRows(
            tier="batch",
            provider=self.settings.provider,
            batch_id=batch.id,
            round=batch.round,
            prices=self.settings.prices,
            on=day,
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{target.name}.partial-{os.getpid()}"
        with open_block_writer(partial) as out:

            def emit(row: LandedRow) -> None:
                out.write_json_line(row)
                tally.add_values(row.status, row.tier, row.cost_usd, row.standard_cost_usd)
                errors.add_row(row.custom_id, row.status, row.error)

            if status.failure:
                code = status.failure.split(":", 1)[0].strip() or "batch_failed"
                error = make_error(self.settings.provider, code, f"batch {batch.id} failed: {status.failure}")
                for custom_id, model in index.unseen():
                    emit(rows.row(custom_id, "errored", model or fallback_model, error=error))
                index.mark_all_seen()
                dropped: dict[str, int] = {}
            else:
                dropped = self._emit_outcomes(batch, backend, index, emit, rows)
            self._emit_missing(batch, index, emit, rows, disowned=_is_foreign_batch(batch, dropped))
        self._record_dropped(batch, dropped)
        # The error groups ride along for the progress record (the UI never reads outcome files).
        self.ledger.write(f"harvest-{batch.id}", {**tally.snapshot(), "errors": errors.snapshot()})
        partial.rename(target)
        log.info(
            "Harvested %s batch %s (round %d): %s",
            self.settings.provider,
            batch.id,
            batch.round,
            tally.counts.to_dict(),
        )

    def _emit_outcomes(
        self,
        batch: SubmittedBatch,
        backend: Any,
        index: _RequestIndex,
        emit: Callable[[LandedRow], None],
        rows: BatchRows,
    ) -> dict[str, int]:
        """Emit a row per result line this chunk sent; return the counts of lines dropped."""
        # Batches submitted outside tokentier have no request file: every result is accepted
        # and no "missing" rows can be inferred.
        known_requests = batch.uri is not None
        dropped = {"own": 0, "foreign": 0, "repeated": 0}
        own_id, take, scope, row = index.own_id, index.take, batch.id_scope, rows.row
        models, first_model = index.models, index.first_model or "unknown"
        for outcome in backend.iter_outcomes(batch.id):
            custom_id = own_id(scope, outcome.custom_id)
            taken = UNKNOWN_ID if custom_id is None else take(custom_id)
            if custom_id is None or (known_requests and taken < 0):
                kind = "repeated" if taken == REPEATED_ID else "foreign"
                dropped[kind] += 1
                if dropped[kind] <= 3:
                    log.warning(
                        "Batch %s returned a result for custom_id %r that this task %s; dropped, not landed",
                        batch.id,
                        outcome.custom_id[:80],
                        "already had" if kind == "repeated" else "never sent in it",
                    )
                continue
            dropped["own"] += 1
            emit(
                row(
                    custom_id,
                    outcome.status,
                    outcome.model or (models[taken] if taken >= 0 else None) or first_model,
                    response=outcome.body,
                    error=outcome.error,
                    usage=outcome.usage if outcome.status == "succeeded" else None,
                )
            )
        return dropped

    def _emit_missing(
        self,
        batch: SubmittedBatch,
        index: _RequestIndex,
        emit: Callable[[LandedRow], None],
        rows: BatchRows,
        *,
        disowned: bool,
    ) -> None:
        """Emit a ``missing`` row for every request the batch returned nothing for."""
        provider = self.settings.provider
        if disowned:
            log.error(
                "Batch %s holds no result for any request this task sent: it is another task's "
                "batch, adopted after a lost submission. Disowning it: none of its rows land, and "
                "this chunk's %d requests count as never submitted (missing, foreign_batch).",
                batch.id,
                batch.requests,
            )
            error = make_error(
                provider, "foreign_batch", f"batch {batch.id} is another task's; the request was not sent"
            )
        else:
            error = make_error(provider, "missing_result", f"batch {batch.id} returned no result for it")
        error["retryable"] = True
        for custom_id, model in index.unseen():
            emit(rows.row(custom_id, "missing", model or index.first_model or "unknown", error=error))

    def _record_dropped(self, batch: SubmittedBatch, dropped: Mapping[str, int]) -> None:
        foreign, repeated = dropped.get("foreign", 0), dropped.get("repeated", 0)
        if foreign or repeated:
            self.ledger.write(
                f"dropped-{batch.id}",
                {"foreign": foreign, "repeated": repeated, "disowned": _is_foreign_batch(batch, dropped)},
            )

    # -- re-batch ------------------------------------------------------------------------------
    def needs_rebatch(self, status: str, error: Mapping[str, Any] | None) -> bool:
        """Whether a row with ``status`` and ``error`` goes to another batch round."""
        policy = self.settings.rebatch
        if policy == "none":
            return False
        if status in ("expired", "missing"):
            return True
        return (
            policy == "expired+retryable" and status == "errored" and bool(error and error.get("retryable"))
        )

    def _ids_where(
        self, round_: int, statuses: tuple[str, ...], wanted: Callable[[RowHead], bool]
    ) -> set[str]:
        """The ids of ``round_``'s rows that are ``wanted``; only rows with one of ``statuses`` can be."""
        ids: set[str] = set()
        for batch in self.batches_of(round_):
            totals = self.ledger.read(f"harvest-{batch.id}")
            if totals is not None and not any(totals["counts"].get(status) for status in statuses):
                continue  # its harvest counted no such row: the file need not be read
            ids.update(
                head.custom_id for _line, head in iter_row_heads(self.outcome_path(batch)) if wanted(head)
            )
        return ids

    def rebatch_candidates(self, round_: int) -> set[str]:
        """Requests of ``round_`` that the ``rebatch`` policy sends to another batch round."""
        return self._ids_where(
            round_,
            ("expired", "missing", "errored"),
            lambda head: self.needs_rebatch(head.status, head.error),
        )

    def is_rescue_round(self, round_: int) -> bool:
        """Whether round ``round_`` ran on a synchronous tier at the deadline."""
        record = self.ledger.read(f"round-{round_:02d}") if round_ else None
        return bool(record and record.get("rescue"))

    def rescue_candidates(self, round_: int) -> set[str]:
        """Requests of ``round_`` without a usable result that a faster tier could still produce."""
        return self._ids_where(
            round_,
            ("expired", "missing", "canceled", "errored"),
            lambda head: head.status in ("expired", "missing", "canceled") or head.retryable_error,
        )

    def rescue(
        self,
        round_: int,
        ids: set[str],
        tier: str,
        land: Callable[[Iterator[dict[str, Any]], ObjectStoragePath], Any],
    ) -> None:
        """Run ``ids`` of the previous round on ``tier`` now, as round ``round_`` (once).

        ``land(rows, target)`` executes normalized request rows and writes one result row per
        request to ``target`` (resuming an interrupted earlier attempt without paying twice).
        The rescue round is recorded like a batch round (a request file, an outcome file and a
        ledger entry), so landing merges it the same way and a retry does not run it twice.
        """
        if self.ledger.read(f"round-{round_:02d}") is not None:
            return
        chunk = write_chunks(
            (
                (custom_id, line)
                for batch in self.batches_of(round_ - 1)
                for custom_id, _model, line in request_ids(batch.uri)
                if custom_id in ids
            ),
            provider=self.settings.provider,
            state_dir=self.state_dir,
            round_=round_,
            caps={"max_requests": max(len(ids), 1), "max_bytes": 1 << 62},
        )[0]
        batch = SubmittedBatch(
            f"rescue-{tier}-r{round_:02d}", round_, 0, chunk.requests, chunk.bytes, chunk.uri
        )
        target = self.outcome_path(batch)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{target.name}.partial-{os.getpid()}"
        rows = (loads_line(line) for _cid, _model, line in request_ids(chunk.uri))
        land(rows, partial)
        partial.rename(target)
        self.ledger.record_submitted(round_, 0, batch.to_dict())
        self.ledger.write(
            f"round-{round_:02d}", {"requests": len(ids), "batches": [batch.id], "rescue": tier}
        )
        log.info("Rescue: ran %d request(s) on the %s tier as round %d", len(ids), tier, round_)

    def submit_round(
        self, round_: int, ids: set[str], backend: BatchBackend, endpoint: str | None
    ) -> list[SubmittedBatch]:
        """Write and submit round ``round_`` holding exactly ``ids`` from the previous round."""
        if self.ledger.read(f"round-{round_:02d}") is None:
            previous = self.batches_of(round_ - 1)
            lines = (
                (custom_id, line)
                for batch in previous
                for custom_id, _model, line in request_ids(batch.uri)
                if custom_id in ids
            )
            chunks = write_chunks(
                lines,
                provider=self.settings.provider,
                state_dir=self.state_dir,
                round_=round_,
                caps=self.settings.caps,
                safety_margin=self.settings.safety_margin,
            )
            self.ledger.write(
                f"plan-{round_:02d}", {"requests": len(ids), "chunks": [c.to_dict() for c in chunks]}
            )
            submitted = submit_chunks(
                chunks,
                backend=backend,
                ledger=self.ledger,
                task_key=self.task_key,
                fingerprint=str(self.manifest.get("fingerprint", "")),
                endpoint=endpoint,
            )
            self.ledger.write(
                f"round-{round_:02d}", {"requests": len(ids), "batches": [b.id for b in submitted]}
            )
            log.info("Round %d: re-batched %d requests into %d batch(es)", round_, len(ids), len(submitted))
        return self.batches_of(round_)

    # -- the spend cap -------------------------------------------------------------------------
    def fix_budget_cap(self, operator_cap: float | None) -> None:
        """Record the cap in force at the first step: the operator's, else the submission's."""
        if self.ledger.read("budget") is not None:
            return
        cap = operator_cap if operator_cap is not None else self.manifest.get("max_cost_usd")
        if cap is not None:
            self.ledger.write("budget", {"max_cost_usd": float(cap)})

    def budget_cap(self) -> float | None:
        """The spend cap in force for this task instance (None: no cap)."""
        record = self.ledger.read("budget")
        return None if record is None else float(record["max_cost_usd"])

    def spent_usd(self) -> float:
        """What the batches harvested so far cost (exact totals from their harvest records)."""
        nanos = 0
        for name in self.ledger.names("harvest-"):
            record = self.ledger.read(name) or {}
            nanos += int((record.get("nanos") or {}).get("cost", 0))
        return nanos / 1_000_000_000

    def within_budget(
        self, stop: str, tier: str, batches: list[SubmittedBatch], ids: set[str] | None
    ) -> bool:
        """Whether a "rebatch" or "rescue" step fits the spend cap beside what was spent.

        The step runs ``ids`` of ``batches`` (None: all of them) on ``tier``; a refusal is logged
        and recorded (``budget-stop``) for the manifest.
        """
        cap = self.budget_cap()
        if cap is None:
            return True
        rows = (
            loads_line(line)
            for batch in batches
            for custom_id, _model, line in request_ids(batch.uri)
            if ids is None or custom_id in ids
        )
        estimate, unpriced = estimate_rows_cost(rows, self.settings.provider, tier, self.settings.prices)
        count = len(ids) if ids is not None else sum(b.requests for b in batches)
        what = f"the {stop} of {count} request(s) on the {tier} tier"
        problem = check_within_cap(cap, self.spent_usd(), estimate, unpriced, what)
        if problem is None:
            return True
        log.warning("Not starting %s: %s", what, problem)
        self.ledger.write("budget-stop", {"stopped": stop, "requests": count, "reason": problem})
        return False

    def _budget_report(self, counts: Mapping[str, int], cost_usd: float | None) -> dict[str, Any] | None:
        cap = self.budget_cap()
        if cap is None:
            return None
        stop = self.ledger.read("budget-stop") or {}
        skipped_sync = int(counts.get(SKIPPED_BUDGET, 0))
        return {
            "max_cost_usd": cap,
            "spent_usd": cost_usd,
            "stopped": stop.get("stopped") or ("rescue" if skipped_sync else None),
            "skipped": skipped_sync + int(stop.get("requests", 0)),
        }

    # -- landing -------------------------------------------------------------------------------
    def final_errors(self) -> list[dict[str, Any]]:
        """Error groups (type, count, examples) of the rows that landed errored.

        Rows an earlier round had errored but a later round re-ran are left out, as landing
        leaves them out. Only outcome files with errored rows are read.
        """
        errors = ErrorSamples()
        superseded: set[str] = set()
        for round_ in range(self.current_round(), -1, -1):
            batches = self.batches_of(round_)
            for batch in batches:
                totals = self.ledger.read(f"harvest-{batch.id}")
                path = self.outcome_path(batch)
                if (totals is not None and not totals["counts"].get("errored")) or not path.exists():
                    continue
                for _line, head in iter_row_heads(path):
                    if head.custom_id not in superseded:
                        errors.add_row(head.custom_id, head.status, head.error)
            if round_:
                superseded |= {cid for batch in batches for cid, _m, _l in request_ids(batch.uri)}
        return errors.snapshot()

    def land(
        self, results_uri: str | None, *, deadline: str | None, finished_at: str | None = None
    ) -> dict[str, Any]:
        """Merge every round's outcomes into one row per input request and return the manifest.

        Later rounds win: a request re-batched in round r+1 takes its row from there. Walking the
        rounds from the last one down needs only the ids of the round above in memory.
        """
        target = storage_path(results_uri) if results_uri else self.state_dir / "results.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        tally = ResultTally()  # exact running totals: memory stays flat whatever the row count
        last = self.current_round()
        superseded: set[str] = set()
        with open_block_writer(target) as out:
            for round_ in range(last, -1, -1):
                batches = self.batches_of(round_)
                for batch in batches:
                    totals = None if superseded else self.ledger.read(f"harvest-{batch.id}")
                    if totals is not None:  # nothing to filter: copy the file, add its totals
                        copy_blocks(self.outcome_path(batch), out)
                        tally.merge(totals)
                        continue
                    for line, head in iter_row_heads(self.outcome_path(batch)):
                        if head.custom_id in superseded:
                            continue
                        out.write(line)
                        tally.add_values(head.status, head.tier, head.cost_usd, head.standard_cost_usd)
                superseded = (
                    {cid for batch in batches for cid, _m, _l in request_ids(batch.uri)} if round_ else set()
                )
        dropped = {"foreign": 0, "repeated": 0}
        disowned: list[str] = []
        for name in self.ledger.names("dropped-"):
            record = self.ledger.read(name) or {}
            for key in dropped:
                dropped[key] += int(record.get(key, 0))
            if record.get("disowned"):
                disowned.append(name.removeprefix("dropped-"))
        manifest = tally.manifest(
            results_uri=str(target),
            provider=self.settings.provider,
            model=self.manifest.get("model"),
            rounds=last + 1,
            batches=[b.id for b in self.all_batches()],
            submitted_at=self.manifest.get("submitted_at"),
            finished_at=finished_at,
            deadline=deadline,
        )
        manifest["dropped_results"] = dropped
        manifest["disowned_batches"] = disowned[:100]
        manifest["budget"] = self._budget_report(manifest["counts"], manifest["cost_usd"])
        self.ledger.write("landed", manifest)
        return manifest
