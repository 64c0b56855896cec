"""The operator extra links: registered with Airflow, keyed in XCom, and tolerant of what they read."""

from __future__ import annotations

import pytest
from airflow.sdk.module_loading import import_string

from airflow_provider_tokentier.core.links import PROVIDER_BATCH_LINK_KEY, VIEW_LINK_KEY
from airflow_provider_tokentier.get_provider_info import get_provider_info
from airflow_provider_tokentier.links import ProviderBatchLink, TokentierViewLink, link_from_xcom
from airflow_provider_tokentier.operators import BatchSubmitOperator, TieredInferenceOperator
from airflow_provider_tokentier.sensors import BatchSensor


def test_provider_info_registers_both_links_and_they_import():
    names = get_provider_info()["extra-links"]
    assert [import_string(n)().name for n in names] == ["Provider batch", "tokentier"]


@pytest.mark.parametrize("operator", [BatchSubmitOperator, BatchSensor, TieredInferenceOperator])
def test_the_three_batch_operators_carry_both_links(operator):
    links = {link.name: link.xcom_key for link in operator.operator_extra_links}
    assert links == {"Provider batch": PROVIDER_BATCH_LINK_KEY, "tokentier": VIEW_LINK_KEY}
    assert ProviderBatchLink().xcom_key == PROVIDER_BATCH_LINK_KEY
    assert TokentierViewLink().xcom_key == VIEW_LINK_KEY


@pytest.mark.parametrize(
    ("stored", "url"),
    [
        ("https://platform.openai.com/batches/batch_1", "https://platform.openai.com/batches/batch_1"),
        ({"url": "/tokentier/ti/d/r/t?map_index=-1"}, "/tokentier/ti/d/r/t?map_index=-1"),
        ({"url": None}, ""),
        (None, ""),
        (42, ""),
    ],
)
def test_get_link_accepts_the_persisted_value_or_the_final_url(stored, url):
    assert link_from_xcom(stored) == url
