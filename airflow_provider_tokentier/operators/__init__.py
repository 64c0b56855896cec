"""Operators that run LLM workloads on the batch, flex and standard tiers."""

from airflow_provider_tokentier.operators.batch import BatchSubmitOperator
from airflow_provider_tokentier.operators.flex import FlexOperator
from airflow_provider_tokentier.operators.standard import StandardOperator
from airflow_provider_tokentier.operators.tiered import TieredInferenceOperator

__all__ = ["BatchSubmitOperator", "FlexOperator", "StandardOperator", "TieredInferenceOperator"]
