"""Operator extra links: the provider console page of the current batch, and tokentier's own view."""

from airflow_provider_tokentier.links.batch import ProviderBatchLink, TokentierViewLink, link_from_xcom

__all__ = ["ProviderBatchLink", "TokentierViewLink", "link_from_xcom"]
