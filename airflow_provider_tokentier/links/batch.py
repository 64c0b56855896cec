"""The extra links of `BatchSubmitOperator`, `BatchSensor` and `TieredInferenceOperator`.

Links are computed on the worker, where the batch ids are known, and stored as XCom under
each link's ``xcom_key`` (by :func:`airflow_provider_tokentier.runtime.reporting.persist_links`):
Airflow 3's api-server only reads that XCom (it never runs this code). They are persisted at
every step -- before each ``defer()`` and on every poke in reschedule mode, because a try that
does not resume from a deferral starts by clearing the task's XComs -- and Airflow pushes
`get_link`'s answer once more when the try ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom  # the configured XCom backend, as providers read it

from airflow_provider_tokentier.core.links import PROVIDER_BATCH_LINK_KEY, VIEW_LINK_KEY


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
    key = PROVIDER_BATCH_LINK_KEY


class TokentierViewLink(_PersistedLink):
    """The tokentier plugin's view of this task instance: rounds, batches, cost and savings."""

    name = "tokentier"
    key = VIEW_LINK_KEY
