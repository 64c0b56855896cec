"""Link building: provider console pages and the plugin's task-instance view."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from airflow_provider_tokentier.core.links import (
    DEFAULT_CONSOLE_URLS,
    provider_batch_url,
    task_instance_view_url,
)


@pytest.mark.parametrize(
    ("provider", "batch_id", "expected"),
    [
        (
            "anthropic",
            "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
            "https://console.anthropic.com/workspaces/default/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
        ),
        ("openai", "batch_abc123", "https://platform.openai.com/batches/batch_abc123"),
    ],
)
def test_provider_batch_url_defaults_to_each_console(provider, batch_id, expected):
    assert provider_batch_url(provider, batch_id) == expected
    assert set(DEFAULT_CONSOLE_URLS) == {"anthropic", "openai"}


def test_provider_batch_url_uses_a_configured_workspace_and_trims_the_slash():
    url = provider_batch_url(
        "anthropic", "msgbatch_1", "https://console.anthropic.com/workspaces/wrk_9/batches/"
    )
    assert url == "https://console.anthropic.com/workspaces/wrk_9/batches/msgbatch_1"


def test_rescue_runs_have_no_provider_page():
    assert provider_batch_url("openai", "rescue-standard-r02") is None
    assert provider_batch_url("openai", "") is None


@pytest.mark.parametrize("base", ["ftp://example.com/batches", "console.anthropic.com/batches", "https://"])
def test_a_console_url_that_is_not_http_is_refused(base):
    with pytest.raises(ValueError, match="anthropic console URL must be an http"):
        provider_batch_url("anthropic", "msgbatch_1", base)


def test_credentials_never_reach_a_link():
    with pytest.raises(ValueError, match="must not carry credentials"):
        provider_batch_url("openai", "batch_1", "https://user:sk-secret@platform.openai.com/batches")
    with pytest.raises(ValueError, match="must not carry credentials"):
        task_instance_view_url("https://admin:pw@airflow.example.com", "d", "r", "t")


def test_unknown_provider_without_a_console_url_is_refused():
    with pytest.raises(ValueError, match="no console URL known for provider 'mistral'"):
        provider_batch_url("mistral", "b1")


def test_task_instance_view_url_is_relative_without_a_base_and_encodes_the_run_id():
    run_id = "manual__2026-11-29T04:00:00+00:00"
    url = task_instance_view_url("", "nightly_doc_refresh", run_id, "summaries_ready", -1)
    assert url == (
        "/tokentier/ti/nightly_doc_refresh/manual__2026-11-29T04%3A00%3A00%2B00%3A00/summaries_ready?map_index=-1"
    )
    parts = urlsplit(url)
    segments = [unquote(p) for p in parts.path.split("/")[3:]]
    assert segments == ["nightly_doc_refresh", run_id, "summaries_ready"]


def test_task_instance_view_url_under_a_base_url_with_a_path_and_a_map_index():
    url = task_instance_view_url("https://airflow.example.com/prod/", "d", "scheduled__x", "t", 3)
    assert url == "https://airflow.example.com/prod/tokentier/ti/d/scheduled__x/t?map_index=3"
    assert task_instance_view_url("http://localhost:8080", "d", "r", "t", None).endswith("?map_index=-1")
