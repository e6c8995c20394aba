"""The real iDDS server and a PanDA relay on loopback, so the real ctrl_bps_panda runs end to end.

What `scripts/idds-server.sh start` brings up, all on 127.0.0.1 (environment `$DRP_IDDS_PREFIX`,
.venvs/idds, from requirements/idds.lock):

* the real iDDS REST server (`idds-server`, `idds.rest.v1.app:create_app`) under gunicorn on
  `http://127.0.0.1:$DRP_IDDS_PORT/idds`, on the PostgreSQL database `$DRP_IDDS_DB` whose schema
  `bootstrap.py` builds with iDDS's own `build_database` (what its tools/env/create_database.py
  runs). iDDS's daemons (clerk, transformer, carrier, ...) do not run: see docs/panda-local.md;
* `relay.py`, standing in for the ONE endpoint of the PanDA server that ctrl_bps_panda uses,
  `POST /server/panda/relay_idds_command` on `http://127.0.0.1:$DRP_PANDA_RELAY_PORT`: it checks
  the caller's `Authorization: Bearer <token>` (401 if missing or unknown) and that the call is
  one ctrl_bps_panda makes, to the configured iDDS (403 otherwise), then does what the PanDA
  server's relay does: runs the command on iDDS's real `ClientManager` with its own (super user)
  DN and the token's user as the original user, and answers `json((True, result))`.

Identities (auth.cfg): the relay calls iDDS in x509 mode as `RELAY_DN`, sent in the
`SSL-CLIENT-S-DN` header as a TLS front end would (iDDS reads it from there over plain HTTP);
`RELAY_DN` is iDDS's only allowed user and a super user, so iDDS takes the user name the relay
passes on (`X-IDDS-Auth-Username-Original`): requests are owned by `USER` ("drp"). The DN header
counts only with the key only the relay holds: `idds_app.py` answers nothing else.

Everything mutable is under `$DRP_WORK_DIR/idds/` (see `config.LocalIdds`). This `__init__`
imports nothing from iDDS: the controller environment may import it to learn the layout.
"""

from __future__ import annotations

__all__ = ["RELAY_DN", "RELAY_USER", "USER", "VO"]

RELAY_DN = "/DC=org/DC=lsst/OU=DRP/CN=panda-relay"
RELAY_USER = "panda-relay"  # what iDDS makes of RELAY_DN (get_user_name_from_dn)
USER = "drp"  # owner of the requests the controller submits
VO = "Rubin"  # PANDA_AUTH_VO (the Origin header), one of auth.cfg allow_vos
