"""The Flask app Docker talks to: a factory, the API blueprint, and one error path.

Every answer is JSON. Errors are ``{"Err": message}`` with a non-200 status: our own errors carry
their status (:mod:`shim.errors`); Werkzeug's (unknown route 404, wrong method 405, body too large
413) keep theirs; anything unexpected is logged with its traceback and answered as a 500 that
says so — Docker never gets an HTML page or a traceback.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from .api import MEDIA_TYPE, bp
from .driver import Driver
from .errors import PycniError
from .settings import Settings

log = logging.getLogger(__name__)


def _error(message: str, status: int) -> tuple[Response, int]:
    response = jsonify({"Err": message})
    response.mimetype = MEDIA_TYPE
    return response, status


def create_app(settings: Settings | None = None, driver: Driver | None = None) -> Flask:
    """Build the app. Nothing happens at import; the driver is made here unless given."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.extensions["pycni.driver"] = driver or Driver(settings)
    app.register_blueprint(bp)

    @app.errorhandler(PycniError)
    def pycni_error(exc: PycniError) -> tuple[Response, int]:
        log.warning("%s: %s", type(exc).__name__, exc)
        return _error(str(exc), exc.status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return _error(f"{exc.name}: {exc.description}", exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error")
        return _error(f"pycni internal error ({type(exc).__name__}: {exc}); see pycni's log", 500)

    return app
