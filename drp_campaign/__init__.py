"""Campaign controller for Rubin multisite DRP: config, graph, ledger (Airflow-free core)."""
