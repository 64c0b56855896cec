"""`tokentier-emulator`: serve the Anthropic + OpenAI emulator on a port."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import uvicorn

from airflow_provider_tokentier.testing.emulator.app import create_app
from airflow_provider_tokentier.testing.emulator.config import EmulatorConfig
from airflow_provider_tokentier.testing.emulator.state import EmulatorState


def build_parser() -> argparse.ArgumentParser:
    """The ``tokentier-emulator`` argument parser: host, port and one flag per emulator setting."""
    parser = argparse.ArgumentParser(
        prog="tokentier-emulator",
        description="Offline emulator of the Anthropic and OpenAI batch, flex and standard APIs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8790, help="port to bind (default 8790)")
    defaults = EmulatorConfig()
    for field in dataclasses.fields(EmulatorConfig):
        if field.name == "api_key":
            continue
        default = getattr(defaults, field.name)
        kind: Any = int if field.name in ("seed", "enqueued_token_limit") else float
        if field.name == "faults":
            kind = json.loads  # e.g. --faults '{"html_200": 1}' (see testing/emulator/faults.py)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=kind,
            default=default,
            help=f"default {default}",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator on ``--host``/``--port`` until stopped; the API key comes from the environment."""
    args = build_parser().parse_args(argv)
    knobs = {f.name: getattr(args, f.name) for f in dataclasses.fields(EmulatorConfig) if f.name != "api_key"}
    config = EmulatorConfig()
    config.update(knobs)
    # The key comes from the environment, never a flag: flags show up in `ps`.
    config.api_key = os.environ.get("TOKENTIER_EMULATOR_API_KEY") or None
    state = EmulatorState(config)
    try:
        uvicorn.run(
            create_app(state),
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            backlog=2048,
        )
    finally:
        state.close()


if __name__ == "__main__":
    main()
