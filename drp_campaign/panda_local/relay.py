"""The PanDA server's `relay_idds_command` endpoint, in front of the real iDDS (WSGI app).

    gunicorn drp_campaign.panda_local.relay:application     (scripts/idds-server.sh start)

What ctrl_bps_panda calls for every operation (pandaclient.Client.call_idds_command):
`POST {PANDA_URL_SSL}/relay_idds_command`, body the gzip'd JSON (or url-encoded form) of
{command_name: "<ClientManager method>[+<iDDS URL>]", args: JSON list, kwargs: JSON dict,
manager: true}, headers `Authorization: Bearer <token>` and `Origin: <vo>`. The answer is what
the PanDA server's relay answers: HTTP 200 with `json((True, <method's return value>))`, or
`json((False, "<why>"))` when the command cannot run. Its body of work is the same as the PanDA
server's (pandaserver userinterface relay_idds_command): decode args with iDDS's json_loads, call
the method on a ClientManager for the iDDS host with the caller as the original user.

Unlike the PanDA server, the token is not an OIDC token from an IdP: it is looked up in the
relay.json the bootstrap writes ({token: user}); a missing or unknown token, or an Origin other
than the configured VO, is refused with HTTP 401 and a message saying which.
Also `GET /server/panda/isAlive` ("alive=yes"), as the PanDA server has, for health checks.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path
from urllib.parse import parse_qs

from drp_campaign.panda_local.config import RELAY_PATH

_LOG = logging.getLogger("drp.panda_relay")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")  # -> relay.out
_CONFIG: dict | None = None


def _config() -> dict:
    global _CONFIG
    if _CONFIG is None:
        path = os.environ.get("DRP_PANDA_RELAY_CONFIG")
        if not path or not Path(path).is_file():
            raise RuntimeError(f"DRP_PANDA_RELAY_CONFIG={path!r} is not a file: start the relay with "
                               "scripts/idds-server.sh start, which writes it")
        _CONFIG = json.loads(Path(path).read_text())
    return _CONFIG


def _respond(start_response, status: str, body: str, ctype: str = "text/plain") -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data)))])
    return [data]


def _authenticate(environ) -> tuple[str | None, str]:
    """(user, "") for a known bearer token from the configured VO, else (None, why)."""
    config = _config()
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return None, ("no bearer token: the PanDA relay needs `Authorization: Bearer <token>` "
                      "(PANDA_AUTH=oidc and PANDA_AUTH_ID_TOKEN; the Connection's password)")
    user = config["tokens"].get(auth[7:].strip())
    if user is None:
        return None, "invalid token: not a token this PanDA relay knows (check the Connection's password)"
    origin = environ.get("HTTP_ORIGIN")
    if origin and origin != config["vo"]:
        return None, f"VO {origin!r} is not served here (expected {config['vo']!r}; the Connection's extra vo)"
    return user, ""


def _read_fields(environ) -> dict:
    """The request's fields: gzip'd JSON (pandaclient's compress=True), plain JSON, or a form."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    if "json" in environ.get("CONTENT_TYPE", "") or body[:1] == b"{":
        return json.loads(body or b"{}")
    return {k: v[-1] for k, v in parse_qs(body.decode()).items()}


def _truthy(value) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def relay_idds_command(fields: dict, user: str) -> str:
    """What the PanDA server's relay_idds_command does; returns the JSON body."""
    import idds.common.utils as idds_utils
    from idds.client.client import Client
    from idds.client.clientmanager import ClientManager

    config = _config()
    command_name = str(fields.get("command_name") or "")
    idds_host = config["idds_host"]
    if "+" in command_name:
        command_name, idds_host = command_name.split("+", 1)
    try:
        if _truthy(fields.get("manager")):
            client = ClientManager(idds_host)
            client.setup_client()
            session_owner = client.client
            if _truthy(fields.get("json_outputs")):
                client.setup_json_outputs()
        else:
            client = session_owner = Client(idds_host)
        if not command_name or command_name.startswith("_") or not hasattr(client, command_name):
            return json.dumps((False, f"{command_name} is not a command of iDDS {type(client).__name__}"))
        args = idds_utils.json_loads(fields["args"]) if fields.get("args") else []
        kwargs = idds_utils.json_loads(fields["kwargs"]) if fields.get("kwargs") else {}
        # The identity a TLS front end would put in the environment; iDDS also reads the
        # headers over plain HTTP. It never looks into the certificate, only that there is one.
        session_owner.session.headers.update({"SSL-CLIENT-S-DN": config["relay_dn"],
                                              "SSL-CLIENT-CERT": "relay"})
        session_owner.retries = 1   # fail now if iDDS is down (its default sleeps up to 30 s a retry)
        client.set_original_user(user_name=user)
        _LOG.info("user=%s command=%s host=%s args=%.200s kwargs=%.200s",
                  user, command_name, idds_host, args, kwargs)
        ret = getattr(client, command_name)(*args, **kwargs)
        try:
            return json.dumps((True, ret))
        except TypeError:
            return idds_utils.json_dumps((True, ret))
    except Exception as exc:  # the PanDA server answers any failure this way, with HTTP 200
        _LOG.exception("command %s failed", command_name)
        return json.dumps((False, f"failed to execute command with {exc}"))


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "GET")
    if path == f"{RELAY_PATH}/isAlive" and method == "GET":
        return _respond(start_response, "200 OK", "alive=yes")
    if path != f"{RELAY_PATH}/relay_idds_command":
        return _respond(start_response, "404 Not Found",
                        f"{path} is not served by this relay: it serves only "
                        f"POST {RELAY_PATH}/relay_idds_command (and GET {RELAY_PATH}/isAlive)")
    if method != "POST":
        return _respond(start_response, "405 Method Not Allowed", "relay_idds_command takes POST")
    user, why = _authenticate(environ)
    if user is None:
        return _respond(start_response, "401 Unauthorized", f"PanDA relay: {why}")
    try:
        fields = _read_fields(environ)
    except (ValueError, OSError) as exc:
        return _respond(start_response, "400 Bad Request", f"PanDA relay: unreadable request body: {exc}")
    return _respond(start_response, "200 OK", relay_idds_command(fields, user), "application/json")
