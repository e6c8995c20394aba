"""iDDS's real REST app (`idds.rest.v1.app:create_app`) mounted at /idds, as its httpd config does.

    gunicorn drp_campaign.panda_local.idds_app:application    (IDDS_CONFIG etc. set first)
"""

from idds.rest.v1.app import create_app
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

application = DispatcherMiddleware(NotFound(), {"/idds": create_app()})
