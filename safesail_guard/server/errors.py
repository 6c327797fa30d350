"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with the right HTTP status.

Every failure the server knows about is an `APIError`; the handlers `install_error_handlers` adds to the app
(`server/app.py`) turn it, FastAPI's own validation and routing errors, and anything unexpected (a 500 that
names only the exception type; the traceback goes to the server log) into this body, so clients written for
OpenAI handle it unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("safesail.server")

ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error", 415: "invalid_request_error",
    422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 502: "upstream_error",
    503: "service_unavailable", 504: "timeout_error",
}


class APIError(Exception):
    """A request that fails with ``status`` and an OpenAI error body; ``param`` names the offending field."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, extra_headers: dict[str, str] | None = None) -> JSONResponse:
        """A JSONResponse carrying this error."""
        return JSONResponse(self.body(), status_code=self.status, headers={**self.headers, **(extra_headers or {})})


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 naming ``param``."""
    return APIError(400, message, param=param, code=code)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with an OpenAI error body."""

    @app.exception_handler(APIError)
    async def _api_error(_req: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        where = ".".join(str(p) for p in errs[0].get("loc", ())[1:]) if errs else ""
        return bad_request(f"{where or 'request'}: {errs[0].get('msg') if errs else 'invalid'}", param=where or None
                           ).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = {404: "no such route", 405: "method not allowed on this route"}.get(exc.status_code, str(exc.detail))
        return APIError(exc.status_code, msg).response(dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return APIError(500, f"internal error ({type(exc).__name__}); see the server log").response()
