"""Local stand-ins for the services a data facility runs: Rucio (`rucio/`) and iDDS with a PanDA
relay (`panda/`), for the demo and the tests on one machine.

Not part of the shipped package (pyproject.toml `packages` leaves it out) and never imported by
the controller (drp_campaign/, operators/, sensors/, hooks/, triggers/, plugins/, dags/); the
controller reaches these services as it reaches real ones, through its Connections and sites file.

Its own small distribution (localservices/pyproject.toml), installed editable by
scripts/setup-envs.sh into the environments that run the services: .venvs/rucio (the Rucio
server loads `rucio.lfn2pfn` through rucio.cfg, the daemons `rucio.transfertool`) and .venvs/idds
(gunicorn loads `panda.idds_app` and `panda.relay`). The tests import it from the repository root.
"""
