"""iDDS's real REST app (`idds.rest.v1.app:create_app`) mounted at /idds, as its httpd config does,
behind a front that answers only the PanDA relay.

    gunicorn localservices.panda.idds_app:application    (IDDS_CONFIG etc. set first)

In x509 mode iDDS takes the caller's identity from `SSL_CLIENT_S_DN`, or, over plain HTTP, from
the `SSL-CLIENT-S-DN` header: at a real site httpd's mod_ssl sets it from a verified client
certificate; here any local process could send the relay's DN (a super user) and act as anyone.
So the front refuses (401) every request that does not carry the key only the relay holds
(`RELAY_KEY_HEADER`, the `idds_key` of relay.json, 0600), as httpd would refuse a connection
without a valid certificate, and drops the key before iDDS sees (or logs) the request.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from idds.rest.v1.app import create_app
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from localservices.panda.config import RELAY_KEY_HEADER

_ENVIRON_KEY = "HTTP_" + RELAY_KEY_HEADER.upper().replace("-", "_")


def relay_key() -> str:
    """The key from the relay's settings (DRP_PANDA_RELAY_CONFIG); no key, no service."""
    path = os.environ.get("DRP_PANDA_RELAY_CONFIG")
    key = json.loads(Path(path).read_text()).get("idds_key") if path and Path(path).is_file() else None
    if not key:
        raise RuntimeError(
            f"DRP_PANDA_RELAY_CONFIG={path!r} holds no idds_key: start iDDS with "
            "scripts/idds-server.sh start, which writes it"
        )
    return key


class RelayOnly:
    """WSGI front: pass a request on only if it carries the relay's key."""

    def __init__(self, app, key: str):
        self.app, self._key = app, key.encode()

    def __call__(self, environ, start_response):
        given = environ.pop(_ENVIRON_KEY, "").encode()
        if not hmac.compare_digest(given, self._key):
            body = (
                f"iDDS here answers only the PanDA relay: {RELAY_KEY_HEADER} missing or wrong "
                "(call iDDS through the relay, scripts/idds-server.sh)"
            ).encode()
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        return self.app(environ, start_response)


application = RelayOnly(DispatcherMiddleware(NotFound(), {"/idds": create_app()}), relay_key())
