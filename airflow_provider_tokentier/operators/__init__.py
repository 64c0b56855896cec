"""Operators that submit LLM workloads to the batch tier."""

from airflow_provider_tokentier.operators.batch import BatchSubmitOperator

__all__ = ["BatchSubmitOperator"]
