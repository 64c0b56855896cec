"""Durable state: the ledger that makes submission retry-safe and landing repeatable."""

from airflow_provider_tokentier.state.ledger import Ledger, resolve_state_root, task_state_dir

__all__ = ["Ledger", "resolve_state_root", "task_state_dir"]
