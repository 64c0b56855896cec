"""The ledger: small JSON records on any ObjectStoragePath (local dir, s3://, gs://, ...).

One object per fact, written once: ``intent`` before a paid call, ``submitted`` right after,
so a retry, a clear or a crash in between can tell "never sent" from "sent, id unknown"
from "sent, id known". Object stores have no append, so facts are separate keys, never a
log file. State is keyed by dag/run/task/map index -- never by try number -- so every try
of the same task instance finds it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.core.records import SCHEMA_VERSION, check_schema_version

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def resolve_state_root(explicit: str | None = None) -> ObjectStoragePath:
    """The operator's ``state_root``, else ``[tokentier] state_root``, else ``$AIRFLOW_HOME/tokentier``."""
    if explicit:
        return storage_path(explicit)
    from airflow.sdk.configuration import conf

    configured = conf.get("tokentier", "state_root", fallback=None)
    if configured:
        return storage_path(configured)
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return storage_path(os.path.join(home, "tokentier"))


def storage_path(location: str) -> ObjectStoragePath:
    """An ObjectStoragePath for a URI, or for a local path (made absolute, as ``file://``)."""
    if "://" not in location:
        location = "file://" + os.path.abspath(os.path.expanduser(location))
    return ObjectStoragePath(location)


def task_state_dir(
    root: ObjectStoragePath, dag_id: str, run_id: str, task_id: str, map_index: int | None
) -> ObjectStoragePath:
    """``{root}/{dag_id}/{run_id}/{task_id}/{map_index}`` with path-unsafe characters replaced."""
    index = -1 if map_index is None else map_index
    return root / _safe(dag_id) / _safe(run_id) / _safe(task_id) / str(index)


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part)


class Ledger:
    """Facts about one task's batches, stored under ``{state_dir}/ledger/``."""

    def __init__(self, state_dir: ObjectStoragePath) -> None:
        self.state_dir = state_dir
        self.dir = state_dir / "ledger"

    # -- generic records -------------------------------------------------------------------------
    def read(self, name: str) -> dict[str, Any] | None:
        """The record ``name``, or None; written by any known schema version (see `write`)."""
        path = self.dir / f"{name}.json"
        if not path.exists():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        check_schema_version(data, f"ledger record {path}")
        data.pop("schema_version", None)
        return data

    def write(self, name: str, record: Mapping[str, Any]) -> None:
        """Write the record ``name`` once, stamped with the current ``schema_version``.

        The version is the storage envelope: `read` checks it and hands back the record
        without it, so callers see the same keys whichever version wrote the file.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / f"{name}.json", {**record, "schema_version": SCHEMA_VERSION})

    def names(self, prefix: str) -> Iterator[str]:
        """Names of the records starting with ``prefix``, sorted."""
        if not self.dir.exists():
            return
        for child in sorted(self.dir.iterdir(), key=lambda p: p.name):
            if child.name.startswith(prefix) and child.name.endswith(".json"):
                yield child.name.removesuffix(".json")

    # -- submission facts ------------------------------------------------------------------------
    @staticmethod
    def _key(round_: int, chunk: int) -> str:
        return f"r{round_:02d}-c{chunk:05d}"

    def intent(self, round_: int, chunk: int) -> dict[str, Any] | None:
        """The intent recorded before submitting chunk ``chunk`` of round ``round_``, or None."""
        return self.read(f"intent-{self._key(round_, chunk)}")

    def record_intent(self, round_: int, chunk: int, record: dict[str, Any]) -> None:
        """Record the intent to submit a chunk, before the paid call."""
        self.write(f"intent-{self._key(round_, chunk)}", record)

    def submitted(self, round_: int, chunk: int) -> dict[str, Any] | None:
        """The batch recorded for chunk ``chunk`` of round ``round_``, or None."""
        return self.read(f"submitted-{self._key(round_, chunk)}")

    def record_submitted(self, round_: int, chunk: int, record: dict[str, Any]) -> None:
        """Record the batch a chunk was submitted as, right after the paid call."""
        self.write(f"submitted-{self._key(round_, chunk)}", record)

    def batches(self, round_: int | None = None) -> list[dict[str, Any]]:
        """Every submitted batch (of one round when given), in round and chunk order."""
        prefix = "submitted-" if round_ is None else f"submitted-r{round_:02d}-"
        return [record for name in self.names(prefix) if (record := self.read(name)) is not None]


def write_json(path: ObjectStoragePath, record: dict[str, Any]) -> None:
    """Write one JSON object so readers never see half of it.

    Object stores publish an object only when its upload completes; on a local disk we write a
    temporary sibling and rename it over the target, which is atomic.
    """
    payload = json.dumps(record, sort_keys=True, default=str)
    if path.protocol in ("file", "local", ""):
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        tmp.write_text(payload)
        os.replace(tmp.path, path.path)
    else:
        path.write_text(payload)
