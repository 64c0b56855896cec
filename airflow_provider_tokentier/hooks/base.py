"""What both provider hooks share: reading a connection and caching async clients per event loop."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import urllib.parse
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import httpx2
from airflow.sdk import BaseHook, Connection
from airflow.sdk.log import mask_secret

from airflow_provider_tokentier.core.errors import MissingConnectionError

try:
    from airflow.sdk.exceptions import AirflowNotFoundException
except ImportError:  # Airflow 3.1: the Task SDK does not re-export it yet
    from airflow.exceptions import AirflowNotFoundException  # type: ignore[attr-defined,no-redef,unused-ignore]

_log = logging.getLogger(__name__)

SyncClientT = TypeVar("SyncClientT")
AsyncClientT = TypeVar("AsyncClientT")

#: One async SDK client (one HTTP connection pool) per (event loop, hook class, conn_id): a
#: triggerer running a thousand waits on one loop opens one pool per connection, not a thousand.
_ASYNC_CLIENTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str], asyncio.Future[Any]]
] = weakref.WeakKeyDictionary()

#: Connections the shared async client keeps open. The SDK default (1,000 allowed, 100 kept
#: alive) makes every request scan a huge pool under a thousand waits and reopens connections
#: beyond 100 on every poll; a pool this size serves ~500 polls/s at 200 ms latency.
ASYNC_POOL_SIZE = 100

#: The pool limits of the shared async clients (both SDKs take httpx2 limits).
ASYNC_POOL_LIMITS = httpx2.Limits(max_connections=ASYNC_POOL_SIZE, max_keepalive_connections=ASYNC_POOL_SIZE)


#: provider name -> its hook class. Each hook module registers its class by subclassing
#: `ProviderHook` with a ``provider``; the ``hooks`` package imports every hook module, so the
#: registry is full whenever this module is importable.
_HOOKS: dict[str, type[ProviderHook[Any, Any]]] = {}

#: The loggers of the SDKs' HTTP transport (both SDKs log through ``httpx2``; ``httpx`` for
#: clients a user passes in). At INFO they write one line per request -- every status poll of
#: every batch -- into task and trigger logs, burying tokentier's own progress lines.
TRANSPORT_LOGGERS = ("httpx2", "httpx")


def quiet_transport_logs() -> None:
    """Raise the SDK transport loggers to WARNING, unless a level was configured for them.

    An explicit level (``[logging] namespace_levels``, ``ANTHROPIC_LOG=info``, ...) is kept: only
    a logger still at NOTSET, which would inherit the task's INFO, is changed.
    """
    for name in TRANSPORT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


class ProviderHook(BaseHook, Generic[SyncClientT, AsyncClientT]):
    """Base for the Anthropic and OpenAI hooks.

    Connection fields: password = API key, host = base URL, extras = provider options. The
    official providers' ``anthropic`` / ``openai`` connections work as they are. When the
    connection does not exist, the SDK's own environment variables (``ANTHROPIC_API_KEY``,
    ``OPENAI_API_KEY``, ``*_BASE_URL``) apply, so a plain key in the environment just works.
    Secrets are read here, where the client is built, and never leave the process.
    """

    provider: ClassVar[str]
    default_conn_name: ClassVar[str]
    #: The environment variable the SDK reads its API key from when none is given.
    api_key_env: ClassVar[str]
    conn_name_attr = "conn_id"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register a concrete hook (one that names its ``provider``) for `provider_hook`."""
        super().__init_subclass__(**kwargs)
        provider = cls.__dict__.get("provider")
        if isinstance(provider, str):
            _HOOKS[provider] = cls

    def __init__(
        self, conn_id: str | None = None, *, max_retries: int | None = None, timeout: float | None = None
    ) -> None:
        super().__init__()
        quiet_transport_logs()  # every client is built through a hook: workers and triggerers alike
        self.conn_id = conn_id or self.default_conn_name
        self.max_retries = max_retries
        self.timeout = timeout

    # -- connection -> client options ---------------------------------------------------------
    def client_options(self) -> dict[str, Any]:
        """SDK constructor arguments from the connection.

        Without the connection, the SDK's ``*_API_KEY`` environment variable is used (and the
        log says so); without either, `MissingConnectionError` names both, before any call.
        """
        try:
            conn = self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            conn = None
        return self._common_options(self._options_or_environment(conn))

    def _options_or_environment(self, conn: Any) -> dict[str, Any]:
        options = {} if conn is None else self.options_from_connection(conn)
        if "api_key" in options:
            return options
        where = f"connection {self.conn_id!r} " + ("does not exist" if conn is None else "has no password")
        if os.environ.get(self.api_key_env):
            _log.info("%s; using the API key in %s from the environment", where, self.api_key_env)
            return options
        raise MissingConnectionError(
            f"{where} and {self.api_key_env} is not set: no API key for {self.provider}. Create the "
            f"connection (conn_id {self.conn_id!r}, password = the API key) or set {self.api_key_env}."
        )

    def _common_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if self.max_retries is not None:
            options["max_retries"] = self.max_retries
        if self.timeout is not None:
            options["timeout"] = self.timeout
        return options

    def options_from_connection(self, conn: Connection) -> dict[str, Any]:
        """Map connection fields to SDK options; subclasses add their extras."""
        options: dict[str, Any] = {}
        if conn.password:
            options["api_key"] = conn.password
        if conn.host:
            options["base_url"] = self.normalize_base_url(self._without_credentials(conn.host))
        return options

    def _without_credentials(self, host: str) -> str:
        """``host`` without a ``user:password@`` part, which is masked in every log.

        The SDKs would put it in the base URL, and httpx logs that URL with every request. The
        API key belongs in the connection's password field.
        """
        parts = urllib.parse.urlsplit(host if "//" in host else f"//{host}")
        if parts.username is None and parts.password is None:
            return host
        userinfo = parts.netloc.rpartition("@")[0]
        for secret in (userinfo, parts.password, urllib.parse.unquote(parts.password or "")):
            if secret:
                mask_secret(secret)
        _log.warning(
            "Connection %r: the host carried credentials (user:password@); they were removed from "
            "the base URL and masked. Put the API key in the connection's password field.",
            self.conn_id,
        )
        hostport = parts.netloc.rpartition("@")[2]
        stripped = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
        return stripped if "//" in host else stripped.removeprefix("//")

    def normalize_base_url(self, host: str) -> str:
        """The connection host as the SDK wants its ``base_url``."""
        return host.rstrip("/")

    # -- clients ------------------------------------------------------------------------------
    def get_client(self) -> SyncClientT:
        """A sync SDK client for worker-side calls."""
        return self.build_client(self.client_options())

    async def get_async_client(self) -> AsyncClientT:
        """The async SDK client shared by every trigger of this connection on the running loop.

        The pending build itself is cached, not just its result: a thousand triggers starting
        together must not each build a client (each would own a connection pool) while the
        first one is still awaiting the connection.
        """
        loop = asyncio.get_running_loop()
        per_loop = _ASYNC_CLIENTS.setdefault(loop, {})
        key = (type(self).__name__, f"{self.conn_id}|{self.max_retries}|{self.timeout}")
        building = per_loop.get(key)
        if building is None:
            building = asyncio.ensure_future(self._build_async_client())
            per_loop[key] = building
        try:
            client: AsyncClientT = await asyncio.shield(building)
        except BaseException:
            if per_loop.get(key) is building and building.done():
                del per_loop[key]  # let the next caller try again
            raise
        return client

    async def _build_async_client(self) -> AsyncClientT:
        # All on a worker thread: the first connection lookup in a process imports much of the
        # Task SDK (secrets backends, the supervisor's modules), and building a client loads CA
        # certificates -- together well over 100 ms that would stall the triggerer's loop. The
        # triggerer's comms serve sync lookups from other threads (its TriggerCommsDecoder.send).
        return await asyncio.to_thread(self._build_async_client_off_loop)

    def _build_async_client_off_loop(self) -> AsyncClientT:
        client = self.build_async_client(self.client_options())
        # The first request would import anyio's asyncio backend on the loop; import it here.
        importlib.import_module("anyio._backends._asyncio")
        return client

    def build_client(self, options: dict[str, Any]) -> SyncClientT:
        """The sync SDK client for ``options``; each provider hook implements it."""
        raise NotImplementedError

    def build_async_client(self, options: dict[str, Any]) -> AsyncClientT:
        """The async SDK client for ``options``; each provider hook implements it."""
        raise NotImplementedError

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's "Test" button: a cheap authenticated list call."""
        try:
            self.probe()
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, "Connection works"

    def probe(self) -> None:
        """One cheap authenticated call, raising when the connection does not work."""
        raise NotImplementedError


def provider_hook(provider: str, conn_id: str | None = None, **kwargs: Any) -> ProviderHook[Any, Any]:
    """The hook for ``provider`` ("anthropic" or "openai"), found in the hook registry."""
    if provider not in _HOOKS:
        raise ValueError(f"provider must be one of {sorted(_HOOKS)}, got {provider!r}")
    return _HOOKS[provider](conn_id, **kwargs)


def async_client_factory(provider: str, conn_id: str | None) -> Callable[[], Any]:
    """A zero-argument builder of ``provider``'s async SDK client, for the sync-tier executor.

    The connection is read now, before the executor's event loop starts; the client itself is
    built on that loop when the executor calls the builder.
    """
    hook = provider_hook(provider, conn_id)
    options = hook.client_options()
    return lambda: hook.build_async_client(options)
