"""Installed as drp_campaign.operators (pyproject package-dir): steps, hops, archive, report."""
