"""The one USD formatter: the router's reasons, the CLI, the chain plan and the landing log use it."""

from __future__ import annotations

import pytest

from airflow_provider_tokentier.core.pricing import format_usd


@pytest.mark.parametrize(
    ("value", "options", "text"),
    [
        (1234.5, {}, "$1,234.50"),
        (0.5, {}, "$0.5000"),
        (0.0123, {}, "$0.0123"),
        (0.0, {}, "$0.00"),
        (-2.5, {}, "$-2.50"),
        (None, {}, "unknown"),
        (None, {"unknown": "-"}, "-"),
        (0.1234567, {"places": 6}, "$0.123457"),
        (None, {"unknown": "unknown (unpriced model)", "places": 6}, "unknown (unpriced model)"),
    ],
)
def test_format_usd(value, options, text):
    assert format_usd(value, **options) == text
