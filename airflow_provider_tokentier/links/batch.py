"""The extra links of `BatchSubmitOperator`, `BatchSensor` and `TieredInferenceOperator`.

Links are computed on the worker, where the batch ids are known, and stored as XCom under
each link's ``xcom_key``: Airflow 3's api-server only reads that XCom (it never runs this
code). They are persisted at every step -- before each ``defer()`` and on every poke in
reschedule mode, because a try that does not resume from a deferral starts by clearing the
task's XComs -- and Airflow pushes `get_link`'s answer once more when the try ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom  # the configured XCom backend, as providers read it

from airflow_provider_tokentier.core.links import provider_batch_url, task_instance_view_url


def link_from_xcom(value: Any) -> str:
    """The URL in a persisted link value: the URL string itself, or a ``{"url": ...}`` mapping."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return str(value.get("url") or "")
    return ""


class _PersistedLink(BaseOperatorLink):
    """A link whose URL the worker stored as XCom under `xcom_key`."""

    key: ClassVar[str]

    @property
    def xcom_key(self) -> str:
        """The XCom key the URL lives under."""
        return self.key

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """The stored URL ("" until the worker stored one: the UI then greys the link out)."""
        return link_from_xcom(XCom.get_value(ti_key=ti_key, key=self.xcom_key))


class ProviderBatchLink(_PersistedLink):
    """The provider console page of the batch the task waits on (or last waited on)."""

    name = "Provider batch"
    key = "tokentier_link_provider_batch"


class TokentierViewLink(_PersistedLink):
    """The tokentier plugin's view of this task instance: rounds, batches, cost and savings."""

    name = "tokentier"
    key = "tokentier_link_view"


def persist_links(context: Any, provider: str | None, batch_id: str | None) -> dict[str, str]:
    """Store both links of the running task instance as XCom; return what was stored.

    ``batch_id``: the current batch (None before the first submission: only the tokentier
    view is stored then). Base URLs come from ``[tokentier] anthropic_console_url`` /
    ``openai_console_url`` and ``[api] base_url``.
    """
    from airflow_provider_tokentier.runtime.settings import api_base_url, console_url

    ti = context["ti"]
    stored = {
        TokentierViewLink.key: task_instance_view_url(
            api_base_url(), ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1)
        )
    }
    if provider and batch_id:
        url = provider_batch_url(provider, batch_id, console_url(provider))
        if url:
            stored[ProviderBatchLink.key] = url
    for key, url in stored.items():
        ti.xcom_push(key=key, value=url)
    return stored
