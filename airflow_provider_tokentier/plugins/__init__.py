"""The ``tokentier`` Airflow plugin: LLM workload monitoring in Airflow's UI.

Registered through the provider info (``plugins``), so installing the package is all it takes.
The api-server mounts its FastAPI app at ``/tokentier``; Airflow's UI shows two external views
of it: a "tokentier" tab on every task instance and an "LLM workloads" page in the navigation.

Every Airflow process loads plugins (the scheduler, the triggerer, each task process), but only
the api-server serves this one: the app is built on its first request, so the other processes
import nothing of FastAPI, Jinja2 or the api-server's security code for it.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_tokentier.core.links import PLUGIN_MOUNT

#: Airflow's UI replaces these placeholders in a task-instance view's ``href``.
TASK_INSTANCE_HREF = PLUGIN_MOUNT + "/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}"


class LazyApp:
    """An ASGI app that builds the plugin's FastAPI app (`plugins.app.create_app`) when first called."""

    def __init__(self) -> None:
        """Build nothing yet."""
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI connection with the FastAPI app."""
        if self._app is None:
            from airflow_provider_tokentier.plugins.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class TokentierPlugin(AirflowPlugin):
    """The api-server app and the UI's external views (task-instance tab, workloads page)."""

    name = "tokentier"
    # Airflow's AirflowPlugin declares these as plain class attributes (lists) to override.
    fastapi_apps = [{"app": LazyApp(), "url_prefix": PLUGIN_MOUNT, "name": "tokentier"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "tokentier",
            "href": TASK_INSTANCE_HREF,
            "destination": "task_instance",
            "url_route": "tokentier",
        },
        {
            "name": "LLM workloads",
            "href": PLUGIN_MOUNT + "/workloads",
            "destination": "nav",
            "category": "browse",
            "url_route": "llm-workloads",
        },
    ]
