"""The PanDA Airflow Connection of a site -> the environment ctrl_bps_panda / pandaclient read.

Connection id: `drp_panda_<site lowercased>` (`connection_id("FRDF")` == "drp_panda_frdf").
Fields (nothing else is read):

    host      the PanDA server's URL base, scheme and path included, exactly what PANDA_URL is at
              the site, e.g. https://usdf-panda-server.slac.stanford.edu:8443/server/panda, or the
              local relay http://127.0.0.1:8093/server/panda (an http:// URL means no TLS)
    port      optional; only if `host` has no port of its own
    password  the OIDC ID token pandaclient sends as `Authorization: Bearer <token>`
    extra     {"vo": "Rubin"}                          required: PANDA_AUTH_VO (the Origin header)
              {"cache_url": "https://.../server/panda"} optional: PANDACACHE_URL (default: host)

e.g. `airflow connections add drp_panda_frdf --conn-type http
--conn-host http://127.0.0.1:8093/server/panda --conn-password <token>
--conn-extra '{"vo": "Rubin"}'` (scripts/idds-server.sh writes the local relay's in
$DRP_WORK_DIR/idds/connection.json). Login and schema are not used.

Environment produced (`panda_environment`): PANDA_URL = PANDA_URL_SSL = host; PANDACACHE_URL;
PANDA_AUTH=oidc; PANDA_AUTH_VO; OIDC_AUTH_TOKEN_FILE (the token, in a 0600 file in PANDA_CONFIG_ROOT:
never in an environment that `bps submit` dumps into its submit directory; the stack commands get
no PANDA_AUTH_ID_TOKEN, which pandaclient's get_token_string would prefer: settings.site_environment);
PANDA_CONFIG_ROOT (a private directory per connection, under $DRP_WORK_DIR/panda/); PANDA_BEHIND_REAL_LB=1 (else
importing pandaclient.Client resolves the cache host with getaddrinfo/getfqdn and rewrites the
URL to the reverse-DNS name: a failure at import on a host without DNS for it, a wrong URL
behind a load balancer); PANDA_VERIFY_HOST=on; BPS_WMS_SERVICE_CLASS (so `bps status|report|
cancel|restart --id N` ask PanDA, not ctrl_bps's default HTCondor).

`request_state(env, request_id)` asks iDDS, through the PanDA relay, for a request's state the
way ctrl_bps_panda's get_status does, and maps it the same way (WmsStates names);
`request_status` gives iDDS's own status name (what confirms a cancel or a restart). Both need
panda-client and idds-common (requirements/controller.lock), not the LSST stack.
No airflow import here: callers pass any object with the Connection's attributes.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any
from urllib.parse import urlparse

from drp_campaign import settings
from drp_campaign.errors import DrpError
from drp_campaign.wms import RunState

__all__ = ["PandaConfigError", "PandaError", "connection_id", "panda_environment", "request_state", "request_status"]

PANDA_SERVICE_CLASS = "lsst.ctrl.bps.panda.PanDAService"
# ctrl_bps_panda PanDAService.get_status: iDDS request status -> WmsStates name; others RUNNING.
IDDS_TO_WMS = {
    "Finished": RunState.SUCCEEDED,
    "Failed": RunState.FAILED,
    "Expired": RunState.FAILED,
    "SubFinished": RunState.FAILED,
    "Cancelled": RunState.DELETED,
    "Suspended": RunState.HELD,
}


class PandaConfigError(DrpError):
    """The PanDA Connection of a site is missing a field or has a bad one."""


class PandaError(DrpError):
    """PanDA (the relay) or iDDS refused or failed a call."""


def connection_id(site: str) -> str:
    if not site or not re.fullmatch(r"[A-Za-z0-9_]+", site):
        raise PandaConfigError(f"site name {site!r} cannot name a PanDA Connection (letters, digits, _)")
    return f"drp_panda_{site.lower()}"


def _bad(conn_id: str, field: str, what: str) -> PandaConfigError:
    return PandaConfigError(
        f"Airflow Connection {conn_id!r}: {field} {what} (format: drp_campaign/panda_connection.py)"
    )


def _url(conn_id: str, field: str, value: Any, port: Any = None) -> str:
    parsed = urlparse(str(value or "").strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise _bad(
            conn_id,
            field,
            f"must be the PanDA server URL base, e.g. https://pandaserver.example.org:8443/server/panda; got {value!r}",
        )
    if port and not parsed.port:
        parsed = parsed._replace(netloc=f"{parsed.netloc}:{int(port)}")
    return parsed.geturl().rstrip("/")


def panda_environment(conn: Any) -> dict[str, str]:
    """The PANDA_* environment for ctrl_bps_panda / pandaclient from a PanDA Connection."""
    conn_id = getattr(conn, "conn_id", None) or "<unnamed>"
    url = _url(conn_id, "host", getattr(conn, "host", None), getattr(conn, "port", None))
    token = (getattr(conn, "password", None) or "").strip()
    if not token:
        raise _bad(conn_id, "password", "is empty: set it to the PanDA OIDC ID token")
    extra = getattr(conn, "extra_dejson", None) or {}
    if not isinstance(extra, dict):
        raise _bad(conn_id, "extra", "must be a JSON object")
    vo = extra.get("vo")
    if not isinstance(vo, str) or not vo.strip():
        raise _bad(conn_id, "extra", 'has no "vo": set e.g. {"vo": "Rubin"} (PANDA_AUTH_VO)')
    unknown = set(extra) - {"vo", "cache_url"}
    if unknown:
        raise _bad(conn_id, "extra", f"has unknown keys {sorted(unknown)} (known: vo, cache_url)")
    cache_url = _url(conn_id, 'extra "cache_url"', extra["cache_url"]) if extra.get("cache_url") else url
    config_root = settings.work_dir() / "panda" / conn_id
    token_file = config_root / "id-token"
    if not token_file.is_file() or token_file.read_text() != token:
        settings.private_file(token_file, token)
    return {
        "PANDA_URL": url,
        "PANDA_URL_SSL": url,
        "PANDACACHE_URL": cache_url,
        "PANDA_AUTH": "oidc",
        "PANDA_AUTH_VO": vo.strip(),
        "OIDC_AUTH_TOKEN_FILE": str(token_file),
        "PANDA_CONFIG_ROOT": str(config_root),
        "PANDA_BEHIND_REAL_LB": "1",
        "PANDA_VERIFY_HOST": "on",
        "BPS_WMS_SERVICE_CLASS": PANDA_SERVICE_CLASS,
    }


def request_state(env: dict[str, str], request_id: int) -> RunState:
    """The WmsStates name of an iDDS request (SUCCEEDED, FAILED, DELETED, HELD or RUNNING),
    mapped from `request_status` as ctrl_bps_panda's get_status maps it. One relay call: cheap
    enough for a deferrable trigger's every poll; no LSST stack import."""
    return IDDS_TO_WMS.get(request_status(env, request_id), RunState.RUNNING)


def request_status(env: dict[str, str], request_id: int) -> str:
    """iDDS's own status name of a request (New, Transforming, Cancelling, Resuming, Finished, ...):
    what confirms a cancel (-> Cancelling) or a restart (-> Resuming), which ctrl_bps maps to
    RUNNING. `get_requests(request_id, with_detail=False)` with manager=True, as ctrl_bps_panda
    calls it; raises PandaError when the relay or iDDS refuses, or the id is unknown."""
    status, payload = _call(env, "get_requests", request_id=int(request_id), with_detail=False)
    if not status:
        raise PandaError(f"iDDS refused get_requests for request {request_id}: {payload}")
    if not payload:
        raise PandaError(f"no iDDS request {request_id} at {env.get('PANDA_URL_SSL')}: check the id")
    if not isinstance(payload, list) or not isinstance(payload[0], dict):
        raise PandaError(f"iDDS get_requests for request {request_id} failed: {payload}")
    return _status_name(payload[0].get("status"))


def _status_name(status: Any) -> str:
    # JSON through the relay: {"__idds_const__": "RequestStatus.Cancelled"} or the decoded enum.
    if isinstance(status, dict):
        status = status.get("__idds_const__") or status.get("attributes", {}).get("_name_", "")
    name = getattr(status, "name", None) or str(status)
    return name.rsplit(".", 1)[-1]


_CALL_LOCK = threading.Lock()


def _call(env: dict[str, str], command: str, **kwargs) -> tuple:
    """One relay call through pandaclient with `env` applied. pandaclient reads the token, VO and
    auth mode from os.environ at every call, but the server URLs only once, at import, into
    module globals: both are set for the call, under a lock (a triggerer polls many sites)."""
    with _CALL_LOCK:
        # The Connection's token file, not a token string this process may hold (which wins).
        saved = {k: os.environ.get(k) for k in {*env, *settings.STACK_ENV_REFUSED}}
        os.environ.update(env)
        for name in settings.STACK_ENV_REFUSED:
            os.environ.pop(name, None)
        try:
            import idds.common.utils as idds_utils
            import pandaclient.Client as panda_client
            import pandaclient.idds_api

            panda_client.baseURL = env["PANDA_URL"]
            panda_client.baseURLSSL = env["PANDA_URL_SSL"]
            panda_client.baseURLCSRVSSL = env["PANDACACHE_URL"]
            api = pandaclient.idds_api.get_api(idds_utils.json_dumps, compress=True, manager=True)
            code, answer = getattr(api, command)(**kwargs)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    if code != 0:
        raise PandaError(f"PanDA at {env.get('PANDA_URL_SSL')} refused {command}: {str(answer).strip()[:300]}")
    if not (isinstance(answer, (list, tuple)) and len(answer) == 2):
        raise PandaError(f"PanDA at {env.get('PANDA_URL_SSL')} answered {command} with {answer!r}")
    return tuple(answer)
