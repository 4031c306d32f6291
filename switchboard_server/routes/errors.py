"""JSON error responses for every route: one shape, `{"code", "message"}`, for every status."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from werkzeug.exceptions import HTTPException

from switchboard_server.core.errors import ProtocolError

# The protocol's codes for the statuses Werkzeug raises itself, so both sources read alike.
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "too_large"}


def error_response(code: str, message: str, status: int):
    response = jsonify(code=code, message=message)
    response.status_code = status
    return response


def register(scope: Flask | Blueprint) -> None:
    """Answer errors raised under `scope` (a blueprint, or the standalone server's whole app) as JSON."""

    @scope.errorhandler(ProtocolError)
    def protocol_error(error: ProtocolError):
        return error_response(error.code, error.message, error.http_status)

    @scope.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        status = error.code or 500
        code = _CODES.get(status) or (error.name or "error").lower().replace(" ", "_")
        return error_response(code, error.description or error.name, status)
