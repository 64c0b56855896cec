"""tokentier: temporal token routing for Apache Airflow."""
