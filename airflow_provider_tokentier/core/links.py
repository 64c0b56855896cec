"""The URLs tokentier shows next to a task: a provider's console page of a batch, and the plugin's view.

Pure string building (no Airflow): the operator links, the progress record and the tests share it.
A URL never carries a key or a token -- only ids that are already visible in the task's log.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

#: Batches pages of the providers' consoles; ``{base}/{batch_id}`` opens one batch. Workspaces
#: differ, so both are configurable (``[tokentier] anthropic_console_url`` / ``openai_console_url``).
DEFAULT_CONSOLE_URLS = {
    "anthropic": "https://console.anthropic.com/workspaces/default/batches",
    "openai": "https://platform.openai.com/batches",
}

#: Where the tokentier plugin's FastAPI app is mounted under the api-server.
PLUGIN_MOUNT = "/tokentier"

#: The XCom keys the worker stores each link's URL under (Airflow's api-server reads them).
PROVIDER_BATCH_LINK_KEY = "tokentier_link_provider_batch"
VIEW_LINK_KEY = "tokentier_link_view"


def _check_base(base: str, what: str) -> str:
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} must be an http(s) URL, got {base!r}")
    if parts.username or parts.password:
        raise ValueError(f"{what} must not carry credentials")
    return base.rstrip("/")


def provider_batch_url(provider: str, batch_id: str, console_url: str | None = None) -> str | None:
    """The console page of one provider batch, or None for batches with no console page.

    Rescue "batches" (``rescue-standard-r02``) ran in the worker and have no provider page.
    """
    if not batch_id or batch_id.startswith("rescue-"):
        return None
    base = console_url or DEFAULT_CONSOLE_URLS.get(provider)
    if base is None:
        raise ValueError(f"no console URL known for provider {provider!r}")
    return f"{_check_base(base, f'{provider} console URL')}/{quote(batch_id, safe='')}"


def task_instance_view_url(
    api_base_url: str, dag_id: str, run_id: str, task_id: str, map_index: int | None = -1
) -> str:
    """The plugin's task-instance view: ``{base}/tokentier/ti/{dag_id}/{run_id}/{task_id}?map_index=N``.

    Path segments are percent-encoded (``urllib.parse.quote(..., safe="")``), so a run id's
    ``:`` and ``+`` arrive intact after the server decodes the path.
    """
    base = _check_base(api_base_url, "the api-server base URL") if api_base_url else ""
    segments = "/".join(quote(part, safe="") for part in (dag_id, run_id, task_id))
    index = -1 if map_index is None else int(map_index)
    return f"{base}{PLUGIN_MOUNT}/ti/{segments}?map_index={index}"
