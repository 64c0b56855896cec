"""Landed results as an Airflow asset event, so downstream DAGs can be scheduled on them.

``results_asset=Asset(...)`` updates that asset when the rows land; ``results_asset=AssetAlias(...)``
adds an event for an asset named by the landed ``results_uri`` itself (a runtime URI, e.g. one
per run). Either way the event's ``extra`` carries what landed: results URI, counts, rounds,
tiers, cost, standard cost and savings (see `results_event_extra`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset, AssetAlias, Context

from airflow_provider_tokentier.core.progress import results_event_extra


def declare_results_asset(operator: Any, results_asset: Any) -> None:
    """Add ``results_asset`` (an `Asset` or an `AssetAlias`) to the operator's outlets."""
    if results_asset is None:
        return
    if not isinstance(results_asset, Asset | AssetAlias):
        raise TypeError(
            f"results_asset must be an airflow.sdk Asset or AssetAlias, got {type(results_asset).__name__}"
        )
    operator.outlets = [*operator.outlets, results_asset]


def emit_results_event(
    context: Context, results_asset: Any, manifest: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Attach the landed results to ``results_asset``'s event; return the event's ``extra``."""
    if results_asset is None:
        return None
    extra = results_event_extra(manifest)
    events = context["outlet_events"]
    if isinstance(results_asset, AssetAlias):
        uri = str(manifest["results_uri"])
        events[results_asset].add(Asset(uri=uri if "://" in uri else f"file://{uri}"), extra=extra)
    else:
        events[results_asset].extra.update(extra)
    return extra
