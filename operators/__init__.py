"""Airflow operators: thin wrappers that call a hook and return a small XCom."""
