"""Installed as drp_campaign.hooks (pyproject package-dir): Rucio, a site's stack, transfer."""
