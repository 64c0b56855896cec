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

from airflow_provider_tokentier.core.pricing import PriceTable, default_price_table

PriceOverride = Mapping[str, Any] | str | os.PathLike[str]


def configured_prices() -> str | None:
    """The raw ``[tokentier] prices`` value, or ``None`` when unset or blank."""
    from airflow.sdk.configuration import conf

    value = conf.get("tokentier", "prices", fallback=None)
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
    from airflow.sdk.configuration import conf

    value = conf.get("tokentier", f"{provider}_console_url", fallback=None)
    return value.strip() if value and value.strip() else None


def api_base_url() -> str:
    """``[api] base_url`` (empty when unset: links are then relative to the UI's own origin)."""
    from airflow.sdk.configuration import conf

    value = conf.get("api", "base_url", fallback=None)
    return value.strip() if value and value.strip() else ""
