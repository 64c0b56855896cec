"""Provider settings read from Airflow's configuration (``[tokentier]`` section).

``[tokentier] prices`` (env: ``AIRFLOW__TOKENTIER__PRICES``) overrides the built-in price table.
It holds either inline JSON or a path to a JSON file, in the shape documented by
:meth:`~airflow_provider_tokentier.core.pricing.PriceTable.with_overrides`::

    [tokentier]
    prices = {"anthropic": {"claude-sonnet-5-5": {"input": 1.5, "output": 7.5, "effective": "2026-12-01"}}}

Precedence, lowest first: built-in table, ``[tokentier] prices``, the per-operator (or ``--prices``)
override.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

from airflow_provider_tokentier.core.errors import LocalStateError
from airflow_provider_tokentier.core.pricing import PriceTable, default_price_table

PriceOverride = Mapping[str, Any] | str | os.PathLike[str]


def airflow_conf() -> Any:
    """Airflow's configuration parser, wherever this Airflow version keeps it."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1 has no Task SDK configuration module
        from airflow.configuration import conf  # type: ignore[no-redef,unused-ignore]
    return conf


def configured_prices() -> str | None:
    """The raw ``[tokentier] prices`` value, or ``None`` when unset or blank."""
    value = airflow_conf().get("tokentier", "prices", fallback=None)
    return value if value and value.strip() else None


@functools.lru_cache(maxsize=8)
def _table_for(configured: str | None) -> PriceTable:
    # Cached per configured value so an unknown model warns once per process, not once per call.
    base = default_price_table()
    return base if configured is None else _apply(base, configured, "[tokentier] prices")


def _apply(table: PriceTable, source: PriceOverride, where: str) -> PriceTable:
    try:
        return table.with_overrides(source)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{where}: not inline JSON and not a readable JSON file ({exc})") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def resolve_price_table(override: PriceOverride | None = None, *, use_config: bool = True) -> PriceTable:
    """The price table in force: built-in, then ``[tokentier] prices``, then ``override``.

    ``override`` is a mapping, inline JSON or a path to a JSON file (an operator's ``prices``
    argument, the CLI's ``--prices``). ``use_config=False`` skips Airflow's configuration.
    ``ValueError`` names the source of a bad override.
    """
    table = _table_for(configured_prices() if use_config else None)
    if override is None or (isinstance(override, str) and not override.strip()):
        return table
    return _apply(table, override, "prices override")


def console_url(provider: str) -> str | None:
    """``[tokentier] {provider}_console_url``: the provider console's batches page (None: the default)."""
    value = airflow_conf().get("tokentier", f"{provider}_console_url", fallback=None)
    return value.strip() if value and value.strip() else None


def api_base_url() -> str:
    """``[api] base_url`` (empty when unset: links are then relative to the UI's own origin)."""
    value = airflow_conf().get("api", "base_url", fallback=None)
    return value.strip() if value and value.strip() else ""


# -- state on shared storage ---------------------------------------------------------------------

#: Executors that run every task on the scheduler's own machine.
SINGLE_MACHINE_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})


def configured_state_root() -> str | None:
    """The raw ``[tokentier] state_root`` value, or ``None`` when unset or blank."""
    conf = airflow_conf()

    value = conf.get("tokentier", "state_root", fallback=None)
    return value.strip() if value and value.strip() else None


def state_root_is_shared() -> bool:
    """``[tokentier] state_root_is_shared``: the operator vouches that local paths are a shared mount."""
    conf = airflow_conf()

    return conf.getboolean("tokentier", "state_root_is_shared", fallback=False)


def progress_parts(rows: int | None = None, seconds: float | None = None) -> dict[str, Any]:
    """``part_rows`` and ``part_seconds`` for flex/standard/rescue progress parts.

    The arguments (operator parameters) win over ``[tokentier] progress_part_rows`` and
    ``progress_part_seconds``, which win over the built-in defaults.
    """
    conf = airflow_conf()

    from airflow_provider_tokentier.core.parts import DEFAULT_PART_ROWS, DEFAULT_PART_SECONDS

    if rows is None:
        rows = conf.getint("tokentier", "progress_part_rows", fallback=DEFAULT_PART_ROWS)
    if seconds is None:
        seconds = conf.getfloat("tokentier", "progress_part_seconds", fallback=DEFAULT_PART_SECONDS)
    if rows < 1:
        raise ValueError(f"progress_part_rows must be at least 1, got {rows!r}")
    if seconds <= 0:
        raise ValueError(f"progress_part_seconds must be positive, got {seconds!r}")
    return {"part_rows": rows, "part_seconds": seconds}


def multi_machine_executors() -> list[str]:
    """The configured executors (``[core] executor``) that may run a task on another machine.

    The setting is a comma-separated list of names, module paths or ``alias:module.path``
    entries; everything but the single-machine executors counts, custom ones included, since
    guessing wrong would mean paying twice.
    """
    conf = airflow_conf()

    value = conf.get("core", "executor", fallback="") or "LocalExecutor"
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    return [
        entry
        for entry in entries
        if entry.rsplit(":", 1)[-1].rsplit(".", 1)[-1] not in SINGLE_MACHINE_EXECUTORS
    ]


def refuse_local_state(locations: Mapping[str, str]) -> None:
    """Raise `LocalStateError` when a location is on local disk and tasks may run elsewhere.

    ``locations`` maps what a location is (``"state_root of task 'submit'"``) to its URI or
    path. Nothing is refused with a single-machine executor, or when ``[tokentier]
    state_root_is_shared`` says local paths are a mount every worker shares.
    """
    from airflow_provider_tokentier.state.ledger import is_local_location

    local = {what: where for what, where in locations.items() if is_local_location(where)}
    if not local:
        return
    executors = multi_machine_executors()
    if not executors or state_root_is_shared():
        return
    listed = "; ".join(f"{what} is {where}" for what, where in local.items())
    raise LocalStateError(
        f"tokentier state would stay on one machine's disk, but [core] executor = "
        f"{', '.join(executors)} may run the submit, the wait and the retry on different machines: "
        f"the sensor would not find the submission and a retry elsewhere would pay for the batch "
        f"again. {listed}. Put the state on object storage every worker reaches: set "
        f"[tokentier] state_root = s3://<conn_id>@bucket/prefix (or gs://..., with "
        f"airflow-provider-tokentier[s3] or [gcs] installed) and leave the tasks' state_root and "
        f"results_uri unset or on object storage. If that local path is a mount every worker "
        f"shares (NFS, EFS, a shared volume), set [tokentier] state_root_is_shared = True."
    )
