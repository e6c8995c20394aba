"""Airflow DAG file: one DAG per campaign YAML in configs/campaigns/ (see drp_campaign.dag_factory)."""

from drp_campaign.dag_factory import build_all_dags

globals().update(build_all_dags())
