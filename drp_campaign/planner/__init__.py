"""The campaign planner (`drp-campaign plan`): which site processes which tracts, and what the
campaign then costs. Airflow-free and stack-free (numpy; matplotlib for the pictures).

One module a job, in the order a plan goes through them:

* `plan_config`: the plan file (sky map, workload, steps' costs, links) as checked models;
* `skymap`: a rings sky map's tracts (centres, areas, neighbours), computed;
* `assign`: tracts to sites along a ring-serpentine curve, by fixed or capacity-aware shares;
  overlap tracts on the boundaries; tracts per group; a site-down re-plan;
* `simulate`: the campaign stage by stage on the DAG's own stage graph, against the lower bound;
* `fits`: storage, time and shares that do not fit, as errors naming by how much;
* `campaign_file`: the planned campaign YAML, written only once it loads;
* `report`, `pictures`: text tables; sky map, Gantt and storage PNGs;
* `command`: the subcommand.

Nothing is imported here, so that cli.py's parser stays light.
"""
