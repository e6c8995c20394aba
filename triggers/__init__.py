"""Installed as drp_campaign.triggers (pyproject package-dir): async waits, BPS runs, rules."""
