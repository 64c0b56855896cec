"""Offline test support: an emulator of the Anthropic and OpenAI APIs and a pytest plugin.

Shipped in the package so users can test their own DAGs offline with the same tools we use.
"""

from airflow_provider_tokentier.testing.emulator.config import EmulatorConfig
from airflow_provider_tokentier.testing.emulator.server import Emulator

__all__ = ["Emulator", "EmulatorConfig"]
