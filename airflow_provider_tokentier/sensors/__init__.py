"""Sensors that gate downstream tasks on batch results."""

from airflow_provider_tokentier.sensors.batch import BatchSensor

__all__ = ["BatchSensor"]
