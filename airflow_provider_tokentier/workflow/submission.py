"""Prepare a workload into chunk files and submit them without ever paying twice.

For each chunk the ledger gets an ``intent`` record before the paid call and a ``submitted``
record with the batch id right after. On any later try:

* ``submitted`` present -> re-attach, no call;
* ``intent`` without ``submitted`` -> the previous try may or may not have reached the
  provider: look the batch up (OpenAI by the metadata tag we set; Anthropic, which has no
  metadata, by creation time and request count); one match -> adopt it, none -> submit,
  several -> refuse loudly, since guessing could double the bill or lose work.

A call that provably never created a batch (it could not connect, or got a definite 4xx) drops
its intent, so a later try submits afresh instead of searching. Anthropic requests go out with
task-scoped custom_ids (:mod:`core.wire_ids`): a batch adopted by time and size that turns out
to be another task's is recognised at harvest and disowned, and its rows never land.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.backends.base import BatchBackend
from airflow_provider_tokentier.core.chunking import DEFAULT_SAFETY_MARGIN, Chunker
from airflow_provider_tokentier.core.errors import (
    AmbiguousSubmissionError,
    SubmitNotSentError,
    WorkloadChangedError,
)
from airflow_provider_tokentier.core.jsonl import (
    JsonlLine,
    iter_jsonl_lines,
    iter_jsonl_objects,
    loads_line,
)
from airflow_provider_tokentier.core.records import ChunkFile, IntentRecord, SubmittedBatch
from airflow_provider_tokentier.core.requests import (
    RequestValidator,
    ValidRequest,
    count_embedding_inputs,
    iter_valid_lines,
    iter_valid_requests,
)
from airflow_provider_tokentier.core.wire_ids import id_scope
from airflow_provider_tokentier.state.blockio import BlockWriter, iter_blocks
from airflow_provider_tokentier.state.ledger import Ledger, storage_path

log = logging.getLogger(__name__)

#: Seconds of clock skew allowed between our intent record and the provider's created_at.
ORPHAN_CLOCK_SKEW_S = 300.0


@dataclass
class Workload:
    """A validated workload written to state: its chunk files, each request in one of them."""

    provider: str
    endpoint: str | None
    fingerprint: str
    total: int
    #: The folder of the round-0 chunk files (before 2026-11-29: a ``requests.jsonl`` beside them).
    requests_uri: str
    chunks: list[ChunkFile] = field(default_factory=list)
    #: The first request's model: the workload's model for pricing history and routing.
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept as the ``workload`` ledger record."""
        return {
            "provider": self.provider,
            "endpoint": self.endpoint,
            "fingerprint": self.fingerprint,
            "total": self.total,
            "requests_uri": self.requests_uri,
            "chunks": [c.to_dict() for c in self.chunks],
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workload:
        """Read the ``workload`` ledger record."""
        return cls(
            provider=data["provider"],
            endpoint=data["endpoint"],
            fingerprint=data["fingerprint"],
            total=data["total"],
            requests_uri=data["requests_uri"],
            chunks=[ChunkFile(**c) for c in data["chunks"]],
            model=data.get("model"),
        )


def iter_jsonl(path: ObjectStoragePath, *, source: str = "requests_uri") -> Iterator[dict[str, Any]]:
    """Stream JSON objects from a JSONL file on any object store, one line at a time.

    A line that is not one JSON object raises `JsonlFileError` naming ``source``, the file and
    the line number, and what is wrong with it.
    """
    return iter_jsonl_objects(iter_blocks(path), source=f"{source} {path}")


class JsonlRequestFile:
    """A JSONL file of request rows: iterated, its decoded rows; :meth:`lines`, its raw lines.

    Submission validates the raw lines and copies them into chunk files, decoding only what it
    checks; the sync tiers iterate decoded rows.
    """

    def __init__(self, path: ObjectStoragePath, *, source: str = "requests_uri") -> None:
        self.path = path
        #: How errors name the file: ``requests_uri <uri>``.
        self.source = f"{source} {path}"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter_jsonl_objects(iter_blocks(self.path), source=self.source)

    def lines(self) -> Iterator[JsonlLine]:
        """The file's non-blank lines, undecoded, read a block at a time."""
        return iter_jsonl_lines(iter_blocks(self.path))


def open_request_rows(requests: Any, requests_uri: str | None) -> Iterable[Mapping[str, Any]]:
    """The workload's rows: a `JsonlRequestFile` over ``requests_uri``, or the ``requests`` list."""
    if requests_uri is not None:
        return JsonlRequestFile(storage_path(requests_uri))
    if isinstance(requests, (str, bytes)):
        raise TypeError(
            "`requests` must be a list of request rows, got a string; "
            "for a JSONL file of rows, pass its URI as `requests_uri`"
        )
    if isinstance(requests, Mapping) or not isinstance(requests, Iterable):
        raise TypeError(f"`requests` must be a list of request rows, got {type(requests).__name__}")
    return requests


def validated_requests(
    rows: Iterable[Mapping[str, Any]],
    provider: str,
    *,
    endpoint: str | None = None,
    default_model: str | None = None,
) -> Iterator[ValidRequest]:
    """Validate ``rows`` lazily, each as the line its chunk file gets.

    The lines of a `JsonlRequestFile` that need no change are copied as they are; anything
    else is normalized and re-encoded. The first invalid row raises when it is reached.
    """
    validator = RequestValidator(provider, endpoint=endpoint, default_model=default_model)
    if isinstance(rows, JsonlRequestFile):
        return iter_valid_lines(validator, rows.lines(), source=rows.source)
    return iter_valid_requests(validator, rows)


def chunk_path(state_dir: ObjectStoragePath, round_: int, index: int) -> ObjectStoragePath:
    """Where chunk ``index`` of round ``round_`` is written."""
    return state_dir / "rounds" / f"r{round_:02d}" / f"c{index:05d}.jsonl"


class _ChunkWriter:
    """Writes serialized lines into chunk files as the chunker says, one file open at a time."""

    def __init__(
        self, state_dir: ObjectStoragePath, round_: int, chunker: Chunker, *, digest: Any = None
    ) -> None:
        self.state_dir = state_dir
        self.round = round_
        self.chunker = chunker
        #: A hashlib object fed every byte written, in order (the workload fingerprint).
        self.digest = digest
        self.files: list[ChunkFile] = []
        self._file: IO[bytes] | None = None
        self._handle: BlockWriter | None = None

    def add(self, custom_id: str, line: bytes, embedding_inputs: int) -> None:
        if self.chunker.add(custom_id, line, embedding_inputs):
            self._close()
            path = chunk_path(self.state_dir, self.round, len(self.files))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("wb")
            self._handle = BlockWriter(self._file, digest=self.digest)
            self.files.append(ChunkFile(self.round, len(self.files), str(path), 0, 0))
        assert self._handle is not None
        self._handle.write_line(line)

    def _close(self) -> None:
        if self._handle is not None and self._file is not None:
            self._handle.flush()
            self._file.close()
            self._handle = self._file = None

    def finish(self) -> list[ChunkFile]:
        self._close()
        self.files = [
            dataclasses.replace(chunk_file, requests=stats.requests, bytes=stats.bytes)
            for chunk_file, stats in zip(self.files, self.chunker.chunks(), strict=True)
        ]
        return self.files


def prepare_workload(
    open_rows: Callable[[], Iterable[Mapping[str, Any]]],
    *,
    provider: str,
    state_dir: ObjectStoragePath,
    endpoint: str | None = None,
    default_model: str | None = None,
    caps: Mapping[str, int | None] | None = None,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
    backend: Any = None,
) -> Workload:
    """Validate every row into chunk files under ``state_dir``, each request written once.

    ``open_rows`` returns a fresh iterable of the input rows each time it is called (a list, or
    a stream over a JSONL file). Streams: memory holds one row plus the set of ids seen,
    whatever the input size. The first invalid row raises `RequestValidationError` before
    anything is submitted. When an earlier try prepared the same workload, its files are
    reused. A different workload replaces it unless a batch was recorded for the old rows, or
    ``backend`` finds one an earlier try may have created: then `WorkloadChangedError`.
    """
    ledger = Ledger(state_dir)
    previous = ledger.read("workload")
    if previous is not None:
        requests = validated_requests(open_rows(), provider, endpoint=endpoint, default_model=default_model)
        if _fingerprint(requests) == previous["fingerprint"]:
            return Workload.from_dict(previous)
        _forget_unsent_workload(ledger, previous, backend, state_dir)
    chunker = Chunker.for_provider(provider, safety_margin=safety_margin, **dict(caps or {}))
    digest = hashlib.blake2b(digest_size=16)
    writer = _ChunkWriter(state_dir, 0, chunker, digest=digest)
    total = 0
    model: str | None = None
    for request in validated_requests(open_rows(), provider, endpoint=endpoint, default_model=default_model):
        writer.add(request.custom_id, request.line, request.embedding_inputs)
        total += 1
        if total == 1:
            model = request.model
            endpoint = endpoint or request.url
    if total == 0:
        raise ValueError("the workload has no requests; nothing to submit")
    chunks = writer.finish()
    requests_uri = str(chunk_path(state_dir, 0, 0).parent)
    workload = Workload(provider, endpoint, digest.hexdigest(), total, requests_uri, chunks, model)
    ledger.write("workload", workload.to_dict())
    return workload


def _forget_unsent_workload(
    ledger: Ledger, previous: Mapping[str, Any], backend: Any, state_dir: ObjectStoragePath
) -> None:
    """Let a changed workload replace one that never reached the provider; refuse otherwise.

    The old rows count as sent when a batch is recorded for them, or when an unresolved intent
    may have created one (found by ``backend``; without a backend to ask, assumed).
    """
    intents = list(ledger.names("intent-"))
    sent = [record["id"] for record in ledger.batches()]
    if not sent and intents:
        if backend is None:
            sent = ["(unverifiable: no backend to ask)"]
        else:
            for name in intents:
                intent = ledger.read(name) or {}
                sent += backend.find_submitted(
                    intent.get("tag") or {},
                    created_after=float(intent.get("at", 0.0)) - ORPHAN_CLOCK_SKEW_S,
                    request_count=int(intent.get("requests", 0)),
                )
    if sent:
        raise WorkloadChangedError(
            f"the requests differ from the {previous['total']} already submitted for this task "
            f"instance (batches {sent[:5]}; state: {state_dir}); refusing to submit a second paid "
            "batch. Delete that state directory to start over, or restore the original requests."
        )
    for name in intents:
        ledger.delete(name)
    if intents:
        log.info("The workload changed and no batch exists for the old one; replacing it")


def _fingerprint(requests: Iterable[ValidRequest]) -> str:
    """The digest of the chunk file lines ``requests`` would be written as, in order."""
    digest = hashlib.blake2b(digest_size=16)
    for request in requests:
        digest.update(request.line)
        digest.update(b"\n")
    return digest.hexdigest()


def write_chunks(
    lines: Iterable[tuple[str, bytes]],
    *,
    provider: str,
    state_dir: ObjectStoragePath,
    round_: int,
    caps: Mapping[str, int | None] | None = None,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
) -> list[ChunkFile]:
    """Chunk already-serialized request lines (a re-batch round) into files for ``round_``."""
    chunker = Chunker.for_provider(provider, safety_margin=safety_margin, **dict(caps or {}))
    writer = _ChunkWriter(state_dir, round_, chunker)
    for custom_id, line in lines:
        inputs = (
            count_embedding_inputs(loads_line(line))
            if provider == "openai" and b"/v1/embeddings" in line
            else 0
        )
        writer.add(custom_id, line, inputs)
    return writer.finish()


def submission_tag(task_key: str, fingerprint: str, chunk: ChunkFile) -> dict[str, str]:
    """Metadata that finds an orphaned OpenAI batch again (<=16 pairs, keys <=64, values <=512)."""
    return {
        "tokentier_task": task_key[-512:],
        "tokentier_workload": fingerprint,
        "tokentier_chunk": f"r{chunk.round}-c{chunk.index}",
    }


def submit_chunks(
    chunks: Iterable[ChunkFile],
    *,
    backend: BatchBackend,
    ledger: Ledger,
    task_key: str,
    fingerprint: str,
    endpoint: str | None,
    on_submitted: Callable[[SubmittedBatch], None] | None = None,
) -> list[SubmittedBatch]:
    """Submit every chunk not yet submitted, recording intent before and the id after each call."""
    submitted: list[SubmittedBatch] = []
    for chunk in chunks:
        known = ledger.submitted(chunk.round, chunk.index)
        if known is not None:
            log.info(
                "Re-attaching to batch %s (round %d chunk %d) from the ledger",
                known["id"],
                chunk.round,
                chunk.index,
            )
            submitted.append(SubmittedBatch.from_dict(known))
            continue
        tag = submission_tag(task_key, fingerprint, chunk)
        scope = id_scope(tag.values()) if getattr(backend, "uses_wire_ids", False) else None
        recorded_intent = ledger.intent(chunk.round, chunk.index)
        batch_id = None
        if recorded_intent is not None:
            intent = IntentRecord.from_dict(recorded_intent)
            recorded = {record["id"] for record in ledger.batches()}
            batch_id = _recover_orphan(backend, intent, tag, chunk, recorded)
        if batch_id is None:
            batch_id = _submit_chunk(backend, ledger, chunk, tag=tag, scope=scope, endpoint=endpoint)
            log.info(
                "Submitted %s batch %s: %d requests, %d bytes",
                backend.provider,
                batch_id,
                chunk.requests,
                chunk.bytes,
            )
        batch = SubmittedBatch(
            batch_id, chunk.round, chunk.index, chunk.requests, chunk.bytes, chunk.uri, scope
        )
        ledger.record_submitted(chunk.round, chunk.index, batch.to_dict())
        if on_submitted is not None:
            on_submitted(batch)
        submitted.append(batch)
    return submitted


def _submit_chunk(
    backend: Any,
    ledger: Ledger,
    chunk: ChunkFile,
    *,
    tag: dict[str, str],
    scope: str | None,
    endpoint: str | None,
) -> str:
    """One paid call, with its intent recorded first and dropped again if it provably never left."""
    ledger.record_intent(
        chunk.round,
        chunk.index,
        IntentRecord(time.time(), tag, chunk.requests).to_dict(),
    )
    kwargs: dict[str, Any] = {"tag": tag, "endpoint": endpoint}
    if scope is not None:
        kwargs["id_scope"] = scope
    try:
        with local_file(storage_path(chunk.uri)) as local:
            batch_id: str = backend.submit(local, request_count=chunk.requests, **kwargs)
    except SubmitNotSentError as exc:
        ledger.drop_intent(chunk.round, chunk.index)
        log.error(
            "Round %d chunk %d was not submitted (%s); nothing can have been created, so a retry "
            "submits it afresh instead of looking for an orphan",
            chunk.round,
            chunk.index,
            exc,
        )
        raise
    return batch_id


def _recover_orphan(
    backend: BatchBackend, intent: IntentRecord, tag: dict[str, str], chunk: ChunkFile, recorded: set[str]
) -> str | None:
    """Find the batch an earlier try may have created before it could record the id.

    Batches this task already recorded for other chunks are not candidates: on Anthropic, where
    only size and time identify a batch, equal-size chunks would otherwise look ambiguous.
    """
    found: list[str] = backend.find_submitted(
        tag, created_after=intent.at - ORPHAN_CLOCK_SKEW_S, request_count=chunk.requests
    )
    matches = [batch_id for batch_id in found if batch_id not in recorded]
    if len(matches) == 1:
        log.warning(
            "An earlier try submitted batch %s (round %d chunk %d) but did not record it; adopting it",
            matches[0],
            chunk.round,
            chunk.index,
        )
        return matches[0]
    if len(matches) > 1:
        raise AmbiguousSubmissionError(
            f"an earlier try may have submitted round {chunk.round} chunk {chunk.index} "
            f"({chunk.requests} requests) but did not record the batch id, and {len(matches)} "
            f"{backend.provider} batches match: {matches}. Refusing to guess (submitting again could pay "
            "twice). Cancel the unwanted batches, then record the right one in the ledger or clear the state."
        )
    log.info(
        "No batch found for the unrecorded intent of round %d chunk %d; submitting it",
        chunk.round,
        chunk.index,
    )
    return None


@contextlib.contextmanager
def local_file(path: ObjectStoragePath) -> Iterator[Path]:
    """``path`` as a local file for an SDK upload: itself when local, else a temporary copy."""
    if path.protocol in ("file", "local", ""):
        yield Path(path.path)
        return
    with tempfile.TemporaryDirectory(prefix="tokentier-chunk-") as tmp:
        local = Path(tmp) / path.name
        with path.open("rb") as src, local.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        yield local
