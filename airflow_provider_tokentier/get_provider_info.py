"""Provider metadata read by Airflow's providers manager (the `apache_airflow_provider` entry point)."""

from __future__ import annotations

from typing import Any

from airflow_provider_tokentier.version import __version__

_API_KEY_UI = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"password": "API Key", "host": "Base URL"},
}


def get_provider_info() -> dict[str, Any]:
    """Describe tokentier to Airflow: its package, hooks, operators, triggers, links and connection types."""
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
