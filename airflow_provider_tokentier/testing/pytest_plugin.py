"""pytest plugin (auto-loaded through the `pytest11` entry point): the `tokentier_emulator` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_tokentier.testing.emulator.server import Emulator


@pytest.fixture(scope="session")
def _tokentier_emulator_server() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def tokentier_emulator(_tokentier_emulator_server: Emulator) -> Emulator:
    """A running emulator, reset to an empty state and default settings for each test.

    One server serves the whole session; each test gets it with no batches, files or
    charges and with the default knobs, so tests stay independent and fast.
    """
    emulator = _tokentier_emulator_server
    emulator.reset()
    emulator.configure(**_defaults())
    return emulator


def _defaults() -> dict[str, object]:
    from airflow_provider_tokentier.testing.emulator.config import EmulatorConfig

    defaults = EmulatorConfig().to_dict()
    defaults["api_key"] = None  # to_dict() masks the key; the default is "any key"
    return defaults
