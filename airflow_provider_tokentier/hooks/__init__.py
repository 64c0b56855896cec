"""Hooks: Airflow connections -> official SDK clients (sync for workers, async for triggers)."""

from airflow_provider_tokentier.hooks.anthropic import TokentierAnthropicHook
from airflow_provider_tokentier.hooks.base import provider_hook
from airflow_provider_tokentier.hooks.openai import TokentierOpenAIHook

__all__ = ["TokentierAnthropicHook", "TokentierOpenAIHook", "provider_hook"]
