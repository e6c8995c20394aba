"""Airflow sensors: each asks one question."""
