"""Installed as drp_campaign.sensors (pyproject package-dir): a hop's wait on its Rucio rule."""
