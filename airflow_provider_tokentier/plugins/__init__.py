"""The ``tokentier`` Airflow plugin: LLM workload monitoring in Airflow's UI.

Registered through the provider info (``plugins``), so installing the package is all it takes.
The api-server mounts its FastAPI app at ``/tokentier``; Airflow's UI shows two external views
of it: a "tokentier" tab on every task instance and an "LLM workloads" page in the navigation.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_tokentier.plugins.app import create_app
from airflow_provider_tokentier.plugins.pages import URL_PREFIX

#: Airflow's UI replaces these placeholders in a task-instance view's ``href``.
TASK_INSTANCE_HREF = URL_PREFIX + "/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}"


class TokentierPlugin(AirflowPlugin):
    """The api-server app and the UI's external views (task-instance tab, workloads page)."""

    name = "tokentier"
    # Airflow's AirflowPlugin declares these as plain class attributes (lists) to override.
    fastapi_apps = [  # noqa: RUF012
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "tokentier"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "tokentier",
            "href": TASK_INSTANCE_HREF,
            "destination": "task_instance",
            "url_route": "tokentier",
        },
        {
            "name": "LLM workloads",
            "href": URL_PREFIX + "/workloads",
            "destination": "nav",
            "category": "browse",
            "url_route": "llm-workloads",
        },
    ]
