"""Run the emulator: in this process on a background thread, or as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from airflow_provider_tokentier.testing.emulator.config import EmulatorConfig

#: The key the helpers below use; the emulator accepts any non-empty key unless told otherwise.
EMULATOR_API_KEY = "tokentier-emulator-key"


def _free_socket(host: str) -> socket.socket:
    # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it every response on a kept-alive connection waits ~40 ms
    # for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(2048)
    return sock


class Emulator:
    """Serve the emulator on a free loopback port for the life of a ``with`` block.

    ``in_process=True`` (default) runs uvicorn on a daemon thread of this process: cheap, and
    tests can reach ``.state`` directly. ``in_process=False`` starts ``tokentier-emulator`` as a
    child process, for Airflow processes and benchmarks that must not share an interpreter.

    Point the SDKs at it with ``anthropic.Anthropic(base_url=emu.base_url, api_key=...)`` and
    ``openai.OpenAI(base_url=emu.openai_base_url, api_key=...)``.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, in_process: bool = True, **knobs: Any
    ) -> None:
        self.config = config or EmulatorConfig()
        self.config.update(knobs)
        self.in_process = in_process
        self.host = "127.0.0.1"
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._admin: httpx.Client | None = None
        self.state: Any = None

    # -- addresses -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """Root URL: the Anthropic SDK's ``base_url``."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The OpenAI SDK's ``base_url`` (it expects the ``/v1`` prefix in it)."""
        return f"{self.base_url}/v1"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Emulator:
        """Bind a free port, start the server (thread or subprocess), wait until it answers."""
        sock = _free_socket(self.host)
        self.port = sock.getsockname()[1]
        if self.in_process:
            self._start_thread(sock)
        else:
            sock.close()
            self._start_process()
        self._admin = httpx.Client(base_url=self.base_url, timeout=30)
        self._wait_ready()
        return self

    def _start_thread(self, sock: socket.socket) -> None:
        from airflow_provider_tokentier.testing.emulator.app import create_app
        from airflow_provider_tokentier.testing.emulator.state import EmulatorState

        self.state = EmulatorState(self.config)
        config = uvicorn.Config(
            create_app(self.state), log_level="warning", access_log=False, lifespan="off", backlog=2048
        )
        self._server = uvicorn.Server(config)
        server = self._server

        def serve() -> None:
            asyncio.run(server.serve(sockets=[sock]))

        self._thread = threading.Thread(target=serve, name="tokentier-emulator", daemon=True)
        self._thread.start()

    def _start_process(self) -> None:
        args = [sys.executable, "-m", "airflow_provider_tokentier.testing.cli", "--host", self.host]
        args += ["--port", str(self.port)]
        for name, value in self.config.to_dict().items():
            if value is None or name == "api_key":
                continue
            args += [
                f"--{name.replace('_', '-')}",
                json.dumps(value) if isinstance(value, dict) else str(value),
            ]
        env = dict(os.environ)
        if self.config.api_key:
            env["TOKENTIER_EMULATOR_API_KEY"] = self.config.api_key
        self._process = subprocess.Popen(args, env=env)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        assert self._admin is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"the emulator process exited with code {self._process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if self._admin.get("/_emulator/health").status_code == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"the emulator did not answer on {self.base_url} within {timeout}s")

    def stop(self) -> None:
        """Close the admin client and stop the server: its thread (closing its state) or its process."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None
            self.state.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- admin API -----------------------------------------------------------------------------
    def _call(self, method: str, path: str, json: Any = None) -> Any:
        if self._admin is None:
            raise RuntimeError("the emulator is not running; use it in a `with` block or call start()")
        response = self._admin.request(method, path, json=json)
        response.raise_for_status()
        return response.json()

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change knobs on the running emulator (same names as `EmulatorConfig`)."""
        result: dict[str, Any] = self._call("POST", "/_emulator/config", knobs)
        self.config.update(knobs)
        return result

    def billing(self) -> dict[str, Any]:
        """What the providers would have billed: ``{usd, requests_billed, by_tier}``."""
        result: dict[str, Any] = self._call("GET", "/_emulator/billing")
        return result

    def advance(self, seconds: float) -> float:
        """Move the virtual clock forward and return the new virtual unix time."""
        return float(self._call("POST", "/_emulator/clock/advance", {"seconds": seconds})["now"])

    def now(self) -> float:
        """The virtual unix time."""
        return float(self._call("GET", "/_emulator/clock")["now"])

    def batches(self) -> dict[str, list[dict[str, Any]]]:
        """Every batch each provider holds, for duplicate checks."""
        result: dict[str, list[dict[str, Any]]] = self._call("GET", "/_emulator/batches")
        return result

    def calls(self) -> dict[str, int]:
        """API calls received so far, by ``METHOD /path/{id}``."""
        result: dict[str, int] = self._call("GET", "/_emulator/calls")
        return result

    def reset(self) -> None:
        """Forget all batches, files, charges and counts (the settings stay)."""
        self._call("POST", "/_emulator/reset")
