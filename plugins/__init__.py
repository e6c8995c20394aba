"""Installed as drp_campaign.plugins (pyproject package-dir): the campaign view, /drp."""
