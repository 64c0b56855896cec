"""Provider metadata read by Airflow's providers manager (the `apache_airflow_provider` entry point)."""

from __future__ import annotations

from typing import Any

from airflow_provider_tokentier.core.links import DEFAULT_CONSOLE_URLS
from airflow_provider_tokentier.core.parts import DEFAULT_PART_ROWS, DEFAULT_PART_SECONDS
from airflow_provider_tokentier.version import __version__

_API_KEY_UI = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"password": "API Key", "host": "Base URL"},
}


def _option(kind: str, default: str | None, example: str | None, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "version_added": "0.1.0",
        "type": kind,
        "example": example,
        "default": default,
    }


#: The ``[tokentier]`` section, as ``airflow config list`` shows it.
CONFIG: dict[str, Any] = {
    "tokentier": {
        "description": "Where tokentier keeps its durable task state, and what it pays.",
        "options": {
            "state_root": _option(
                "string",
                None,
                "s3://aws_default@my-bucket/tokentier",
                "Root of every task's durable state (ledger, chunk files, progress parts, results) "
                "under {dag_id}/{run_id}/{task_id}/{map_index}/: any ObjectStoragePath URI, with the "
                "connection id before the bucket (s3://<conn_id>@bucket/prefix, gs://<conn_id>@bucket/"
                "prefix). Empty means $AIRFLOW_HOME/tokentier, which serves one machine only: with an "
                "executor that runs tasks on several machines (Celery, Kubernetes, Edge) a local root "
                "is refused before anything is paid. An operator's state_root wins over this.",
            ),
            "state_root_is_shared": _option(
                "boolean",
                "False",
                "True",
                "Declare that local state_root and results_uri paths are a mount every worker shares "
                "(NFS, EFS, a shared volume), so they are accepted with a multi-machine executor.",
            ),
            "progress_part_rows": _option(
                "integer",
                str(DEFAULT_PART_ROWS),
                "200",
                "Flex, standard and deadline-rescue runs write their finished rows as numbered part "
                "objects of at most this many rows: a worker killed mid-run loses at most one part "
                "(those rows are paid again by the retry). Operators' progress_part_rows wins.",
            ),
            "progress_part_seconds": _option(
                "float",
                str(DEFAULT_PART_SECONDS),
                "15",
                "Finished rows are written as a part at the latest this many seconds after the first "
                "of them finished, even when fewer than progress_part_rows are waiting. Operators' "
                "progress_part_seconds wins.",
            ),
            "anthropic_console_url": _option(
                "string",
                None,
                DEFAULT_CONSOLE_URLS["anthropic"],
                "The Anthropic console's batches page that the provider-batch link on a task opens "
                f"(a batch id is appended). Empty means {DEFAULT_CONSOLE_URLS['anthropic']}.",
            ),
            "openai_console_url": _option(
                "string",
                None,
                DEFAULT_CONSOLE_URLS["openai"],
                "The OpenAI platform's batches page that the provider-batch link on a task opens "
                f"(a batch id is appended). Empty means {DEFAULT_CONSOLE_URLS['openai']}.",
            ),
            "prices": _option(
                "string",
                None,
                '{"anthropic": {"claude-sonnet-5-5": {"input": 1.5, "output": 7.5, '
                '"effective": "2026-12-01"}}}',
                "Price overrides (USD per million tokens) over the built-in table: inline JSON or the "
                "path of a JSON file. An operator's prices argument wins over this.",
            ),
        },
    }
}


def get_provider_info() -> dict[str, Any]:
    """Describe tokentier to Airflow, ``[tokentier]`` configuration options included.

    Its package, hooks, operators, triggers, links, connection types and the config section.
    """
    return {
        "package-name": "airflow-provider-tokentier",
        "name": "tokentier",
        "description": (
            "Temporal token routing for LLM work: run each workload on the cheapest tier "
            "(Anthropic/OpenAI batch, OpenAI flex, standard) whose turnaround it can tolerate, "
            "with retry-safe submission, deferrable waits, expiry re-batching and cost accounting."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "tokentier",
                "external-doc-url": "https://pypi.org/project/airflow-provider-tokentier/",
                "tags": ["ai"],
            }
        ],
        "hooks": [
            {
                "integration-name": "tokentier",
                "python-modules": [
                    "airflow_provider_tokentier.hooks.anthropic",
                    "airflow_provider_tokentier.hooks.openai",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": "tokentier",
                "python-modules": [
                    "airflow_provider_tokentier.operators.batch",
                    "airflow_provider_tokentier.operators.flex",
                    "airflow_provider_tokentier.operators.standard",
                    "airflow_provider_tokentier.operators.tiered",
                ],
            }
        ],
        "sensors": [
            {"integration-name": "tokentier", "python-modules": ["airflow_provider_tokentier.sensors.batch"]}
        ],
        "triggers": [
            {"integration-name": "tokentier", "python-modules": ["airflow_provider_tokentier.triggers.batch"]}
        ],
        "plugins": [
            {"name": "tokentier", "plugin-class": "airflow_provider_tokentier.plugins.TokentierPlugin"}
        ],
        "extra-links": [
            "airflow_provider_tokentier.links.batch.ProviderBatchLink",
            "airflow_provider_tokentier.links.batch.TokentierViewLink",
        ],
        "config": CONFIG,
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_tokentier.hooks.anthropic.TokentierAnthropicHook",
                "hook-name": "Anthropic (tokentier)",
                "connection-type": "tokentier_anthropic",
                "conn-fields": {
                    "anthropic_version": {
                        "label": "anthropic-version header",
                        "schema": {"type": ["string", "null"]},
                        "description": "Overrides the API version header; empty means the SDK default.",
                    },
                },
                "ui-field-behaviour": _API_KEY_UI,
            },
            {
                "hook-class-name": "airflow_provider_tokentier.hooks.openai.TokentierOpenAIHook",
                "hook-name": "OpenAI (tokentier)",
                "connection-type": "tokentier_openai",
                "conn-fields": {
                    "organization": {
                        "label": "Organization ID",
                        "schema": {"type": ["string", "null"]},
                        "description": "OpenAI organization id (sent as OpenAI-Organization).",
                    },
                    "project": {
                        "label": "Project ID",
                        "schema": {"type": ["string", "null"]},
                        "description": "OpenAI project id (sent as OpenAI-Project).",
                    },
                },
                "ui-field-behaviour": _API_KEY_UI,
            },
        ],
    }
