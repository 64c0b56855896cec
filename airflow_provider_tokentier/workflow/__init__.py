"""The batch workflow on durable state: prepare, submit retry-safely, harvest, re-batch, land.

Airflow-free apart from `ObjectStoragePath` for state, so operators, sensors and the CLI share it.
"""
