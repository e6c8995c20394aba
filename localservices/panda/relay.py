"""The PanDA server's `relay_idds_command` endpoint, in front of the real iDDS (WSGI app).

    gunicorn localservices.panda.relay:application     (scripts/idds-server.sh start)

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

Unlike the PanDA server, it relays only what ctrl_bps_panda (and the controller's
panda_connection) call: the ClientManager methods of COMMANDS with their keyword names, to the
iDDS of relay.json; any other method (the client also reads and writes local files), a
non-manager client, another iDDS host (`<cmd>+<host>`), other arguments, or an encoded object of
a class outside iDDS is refused with HTTP 403 and a message saying which, before anything runs.
It shows iDDS its DN and the key only it holds (idds_app.py refuses requests without it).
Also `GET /server/panda/isAlive` ("alive=yes"), as the PanDA server has, for health checks.
"""

from __future__ import annotations

import gzip
import inspect
import json
import logging
import os
from pathlib import Path
from urllib.parse import parse_qs

from localservices.panda.config import RELAY_KEY_HEADER, RELAY_PATH

_LOG = logging.getLogger("drp.panda_relay")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")  # -> relay.out
_CONFIG: dict | None = None

# What ctrl_bps_panda 30.2026.x calls on iDDS's ClientManager through the relay
# (lsst/ctrl/bps/panda/panda_service.py, panda_auth_utils.py, edgenode/build_cmd_line_decoder.py),
# with the keyword names it uses; panda_connection.request_status calls get_requests too.
COMMANDS: dict[str, frozenset[str]] = {
    "ping": frozenset(),  # ping
    "get_status": frozenset({"request_id", "with_detail"}),  # panda_auth_status
    "get_requests": frozenset({"request_id", "with_detail"}),  # status, report
    "get_contents_output_ext": frozenset({"request_id", "workload_id"}),  # report: exit codes
    "submit": frozenset({"workflow", "username", "use_dataset_name"}),  # submit
    "submit_build": frozenset({"workflow", "username", "use_dataset_name"}),  # submit (build mode)
    "update_build_request": frozenset({"request_id", "signature", "workflow"}),  # the build job
    "retry": frozenset({"request_id"}),  # restart
    "abort": frozenset({"request_id"}),  # cancel
}
_IDDS_MODULES = "idds."  # classes an encoded argument may name (iDDS's json_loads imports them)


class Refused(Exception):
    """A call this relay does not serve; the message says what was asked and what is served."""


def _config() -> dict:
    global _CONFIG
    if _CONFIG is None:
        path = os.environ.get("DRP_PANDA_RELAY_CONFIG")
        if not path or not Path(path).is_file():
            raise RuntimeError(
                f"DRP_PANDA_RELAY_CONFIG={path!r} is not a file: start the relay with "
                "scripts/idds-server.sh start, which writes it"
            )
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
        return None, (
            "no bearer token: the PanDA relay needs `Authorization: Bearer <token>` "
            "(PANDA_AUTH=oidc and PANDA_AUTH_ID_TOKEN; the Connection's password)"
        )
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


def _foreign_classes(value) -> set[str]:
    """Classes outside iDDS named in an encoded argument (iDDS's json_loads would import and make them)."""
    if isinstance(value, list):
        return set().union(*map(_foreign_classes, value)) if value else set()
    if not isinstance(value, dict):
        return set()
    found = set().union(*map(_foreign_classes, value.values())) if value else set()
    if {"class", "module", "attributes"} <= value.keys():
        module = str(value["module"])
        if not module.startswith(_IDDS_MODULES):
            found.add(f"{module}.{value['class']}")
    return found


def checked_call(fields: dict) -> tuple[str, str, str]:
    """(command, args JSON, kwargs JSON) of a call this relay serves, else Refused: one of COMMANDS,
    on the ClientManager, to the configured iDDS, with its known argument names, iDDS classes only."""
    from idds.client.clientmanager import ClientManager

    configured = _config()["idds_host"]
    command = str(fields.get("command_name") or "")
    if "+" in command:
        command, host = command.split("+", 1)
        if host.rstrip("/") != configured.rstrip("/"):
            raise Refused(
                f"iDDS host {host!r} is not served: this relay calls only {configured} "
                "(leave iddsServer unset in the BPS config)"
            )
    if command not in COMMANDS:
        raise Refused(f"{command!r} is not relayed: only what ctrl_bps_panda calls ({', '.join(COMMANDS)})")
    if not _truthy(fields.get("manager")):
        raise Refused(f"{command}: only iDDS's ClientManager is relayed (manager=True, as ctrl_bps_panda calls it)")
    args_json, kwargs_json = fields.get("args") or "[]", fields.get("kwargs") or "{}"
    try:
        args, kwargs = json.loads(args_json), json.loads(kwargs_json)
    except (TypeError, ValueError) as exc:
        raise Refused(f"{command}: args and kwargs must be JSON ({exc})") from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise Refused(f"{command}: args must be a JSON list and kwargs a JSON object")
    try:
        bound = inspect.signature(getattr(ClientManager, command)).bind(None, *args, **kwargs).arguments
    except TypeError as exc:
        raise Refused(f"{command}: {exc}") from None
    unknown = sorted(set(bound) - {"self"} - COMMANDS[command])
    if unknown:
        raise Refused(
            f"{command}: argument(s) {', '.join(unknown)} not relayed "
            f"(only {', '.join(sorted(COMMANDS[command])) or 'none'})"
        )
    foreign = _foreign_classes([args, kwargs])
    if foreign:
        raise Refused(
            f"{command}: encoded objects of classes outside iDDS are not relayed: {', '.join(sorted(foreign))}"
        )
    return command, args_json, kwargs_json


def relay_idds_command(command: str, args_json: str, kwargs_json: str, user: str) -> str:
    """What the PanDA server's relay_idds_command does, for a call `checked_call` passed; returns
    the JSON body."""
    import idds.common.utils as idds_utils
    from idds.client.clientmanager import ClientManager

    config = _config()
    try:
        client = ClientManager(config["idds_host"])
        client.setup_client()
        args, kwargs = idds_utils.json_loads(args_json), idds_utils.json_loads(kwargs_json)
        # The identity a TLS front end would put in the environment; iDDS also reads the
        # headers over plain HTTP. It never looks into the certificate, only that there is one.
        # The key shows iDDS's front (idds_app.py) that the relay is calling.
        client.client.session.headers.update(
            {"SSL-CLIENT-S-DN": config["relay_dn"], "SSL-CLIENT-CERT": "relay", RELAY_KEY_HEADER: config["idds_key"]}
        )
        client.client.retries = 1  # fail now if iDDS is down (its default sleeps up to 30 s a retry)
        client.set_original_user(user_name=user)
        _LOG.info("user=%s command=%s args=%.200s kwargs=%.200s", user, command, args, kwargs)
        ret = getattr(client, command)(*args, **kwargs)
        try:
            return json.dumps((True, ret))
        except TypeError:
            return idds_utils.json_dumps((True, ret))
    except Exception as exc:  # the PanDA server answers any failure this way, with HTTP 200
        _LOG.exception("command %s failed", command)
        return json.dumps((False, f"failed to execute command with {exc}"))


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "GET")
    if path == f"{RELAY_PATH}/isAlive" and method == "GET":
        return _respond(start_response, "200 OK", "alive=yes")
    if path != f"{RELAY_PATH}/relay_idds_command":
        return _respond(
            start_response,
            "404 Not Found",
            f"{path} is not served by this relay: it serves only "
            f"POST {RELAY_PATH}/relay_idds_command (and GET {RELAY_PATH}/isAlive)",
        )
    if method != "POST":
        return _respond(start_response, "405 Method Not Allowed", "relay_idds_command takes POST")
    user, why = _authenticate(environ)
    if user is None:
        return _respond(start_response, "401 Unauthorized", f"PanDA relay: {why}")
    try:
        fields = _read_fields(environ)
    except (ValueError, OSError) as exc:
        return _respond(start_response, "400 Bad Request", f"PanDA relay: unreadable request body: {exc}")
    try:
        call = checked_call(fields)
    except Refused as exc:
        _LOG.warning("user=%s refused: %s", user, exc)
        return _respond(start_response, "403 Forbidden", f"PanDA relay: {exc}")
    return _respond(start_response, "200 OK", relay_idds_command(*call, user), "application/json")
