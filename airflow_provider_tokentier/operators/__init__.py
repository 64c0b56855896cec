"""Operators that submit LLM workloads to the batch tier."""

from airflow_provider_tokentier.operators.batch import BatchSubmitOperator
from airflow_provider_tokentier.operators.flex import FlexOperator, StandardOperator
from airflow_provider_tokentier.operators.tiered import TieredInferenceOperator

__all__ = ["BatchSubmitOperator", "FlexOperator", "StandardOperator", "TieredInferenceOperator"]
