"""The campaign view in Airflow's UI: each run's live site x step matrix, and its ledger.

An Airflow 3 plugin: a small FastAPI app (`campaign_view_app.py`, behind Airflow's own auth)
served by the api-server under /drp, linked from the Browse menu and from every DAG run
("Campaign status").

Every process that loads plugins imports this module, every task process included (for macros),
but only the api-server serves the app: the app, with what it needs from Airflow's API server
(its auth dependency, ~0.5 s of CPU to import), is imported on its first request.

The plugin also puts trigger_guard.OneRunPerChoice in front of Airflow's trigger route: a campaign
triggered again while a run with the same choices is queued or running is refused, naming it.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from drp_campaign.plugins.trigger_guard import OneRunPerChoice


class CampaignViewApp:
    """ASGI app that hands each request to the view's FastAPI app, imported on first use."""

    async def __call__(self, scope, receive, send) -> None:
        from drp_campaign.plugins.campaign_view_app import app

        await app(scope, receive, send)


class DrpCampaignPlugin(AirflowPlugin):
    name = "drp_campaign"
    fastapi_apps = [{"app": CampaignViewApp(), "url_prefix": "/drp", "name": "DRP campaign view"}]
    fastapi_root_middlewares = [{"middleware": OneRunPerChoice, "name": "DRP: one run per campaign choice"}]
    external_views = [
        {
            "name": "DRP campaigns",
            "href": "/drp/runs",
            "destination": "nav",
            "category": "browse",
            "url_route": "drp-campaigns",
        },
        {
            "name": "DRP campaign plans",
            "href": "/drp/plans",
            "destination": "nav",
            "category": "browse",
            "url_route": "drp-campaign-plans",
        },
        {
            "name": "Campaign status",
            "href": "/drp/run?run_id={RUN_ID}&dag_id={DAG_ID}",
            "destination": "dag_run",
            "url_route": "drp-campaign-run",
        },
    ]
