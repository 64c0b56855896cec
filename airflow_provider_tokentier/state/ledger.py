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
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1 has no Task SDK configuration module
        from airflow.configuration import conf  # type: ignore[no-redef,unused-ignore]

    configured = conf.get("tokentier", "state_root", fallback=None)
    if configured:
        return storage_path(configured)
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return storage_path(os.path.join(home, "tokentier"))


#: Protocols whose paths live on this machine's own disk (or memory).
LOCAL_PROTOCOLS = frozenset({"", "file", "local", "memory"})


def storage_path(location: str | ObjectStoragePath) -> ObjectStoragePath:
    """An ObjectStoragePath for a URI, or for a local path (made absolute, as ``file://``).

    On an object store every operation on the path and its children goes through one
    filesystem instance (Airflow's for the URI's protocol and connection) with directory
    listings never cached, so a read always sees what any worker wrote before it.
    """
    if isinstance(location, ObjectStoragePath):
        path = location
    else:
        if "://" not in location:
            location = "file://" + os.path.abspath(os.path.expanduser(location))
        path = ObjectStoragePath(location)
    if path.protocol not in LOCAL_PROTOCOLS:
        _use_one_uncached_filesystem(path)
    return path


def is_local(path: ObjectStoragePath) -> bool:
    """Whether ``path`` is on this machine only (a local disk or memory)."""
    return path.protocol in LOCAL_PROTOCOLS


def is_local_location(location: str) -> bool:
    """Whether a URI or path (as `storage_path` takes it) is on this machine only."""
    scheme, found, _rest = location.partition("://")
    return not found or scheme.lower() in LOCAL_PROTOCOLS


def _use_one_uncached_filesystem(path: ObjectStoragePath) -> None:
    fs = path.fs  # Airflow's filesystem for (protocol, conn_id): the one open() and stat() use.
    # Without a conn_id in the URI, ObjectStoragePath sends exists(), iterdir(), write_text() and
    # the like through a second filesystem that fsspec builds itself, with its own listing cache:
    # a file written through open() then stays invisible to exists() and iterdir(). Children
    # made with ``/`` inherit the filesystem set here.
    # Airflow 3.2+ wraps a UPath (``__wrapped__``); on 3.1 ObjectStoragePath is the UPath itself.
    upath: Any = getattr(path, "__wrapped__", path)
    upath._fs_cached = fs
    # State objects are written by other workers too, and s3fs/gcsfs answer exists() and info()
    # from a cached listing of the parent: a listing cached before another worker's write
    # would hide that write. A DirCache with use_listings_cache=False stores nothing.
    dircache = getattr(fs, "dircache", None)
    if dircache is not None and getattr(dircache, "use_listings_cache", False):
        dircache.use_listings_cache = False
        dircache.clear()


def task_state_dir(
    root: ObjectStoragePath, dag_id: str, run_id: str, task_id: str, map_index: int | None
) -> ObjectStoragePath:
    """``{root}/{dag_id}/{run_id}/{task_id}/{map_index}`` with path-unsafe characters replaced."""
    index = -1 if map_index is None else map_index
    return root / _safe(dag_id) / _safe(run_id) / _safe(task_id) / str(index)


def children(directory: ObjectStoragePath) -> list[ObjectStoragePath]:
    """What ``directory`` holds, by name; empty when it does not exist.

    One listing request on an object store. There a directory exists only while it holds
    objects (``mkdir`` creates nothing), so "not there" is the normal state of a new one.
    """
    try:
        return sorted(directory.iterdir(), key=lambda p: p.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


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

    def delete(self, name: str) -> None:
        """Forget one record (no error when it is absent)."""
        path = self.dir / f"{name}.json"
        if path.exists():
            path.unlink()

    def names(self, prefix: str) -> Iterator[str]:
        """Names of the records starting with ``prefix``, sorted."""
        for child in children(self.dir):
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

    def drop_intent(self, round_: int, chunk: int) -> None:
        """Forget an intent whose call provably created nothing."""
        self.delete(f"intent-{self._key(round_, chunk)}")

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
    """Write one JSON object so readers never see half of it (see `write_whole`)."""
    write_whole(path, json.dumps(record, sort_keys=True, default=str).encode())


def write_whole(path: ObjectStoragePath, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so readers see all of it or nothing.

    Object stores publish an object only when its upload completes; on a local disk we write a
    temporary sibling and rename it over the target, which is atomic.
    """
    if is_local(path):
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        tmp.write_bytes(payload)
        os.replace(tmp.path, path.path)
    else:
        path.write_bytes(payload)
