"""Deferrable triggers: wait on provider batches in the triggerer, not in a worker slot."""

from airflow_provider_tokentier.triggers.batch import BatchTrigger

__all__ = ["BatchTrigger"]
