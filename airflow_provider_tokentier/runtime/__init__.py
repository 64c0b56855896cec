"""Airflow glue shared by the operators, sensors, triggers and the CLI."""
