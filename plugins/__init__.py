"""Airflow plugins (UI views)."""
