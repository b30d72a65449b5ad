"""``tdc serve``: the console pages, the HTTP receiver and ``/metrics`` in one FastAPI application.

Every route needs credentials.  Pages need a console login (users from ``TDC_WEB_USERS``, a
signed session cookie) and redirect to ``/login`` without one; the receiver needs a source's
bearer token (``TDC_RECEIVER_TOKENS``); ``/metrics`` needs ``TDC_METRICS_TOKEN``; the OpenAPI
description needs either a login or a receiver token.  Forms that change state carry the
session's CSRF token.  Handlers are plain functions: FastAPI runs them in its thread pool, so
the storage and Redis calls they make never block the event loop.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.middleware.sessions import SessionMiddleware

from models.storage import Storage, get_storage
from settings import Settings, SettingsError, get_settings
from web import console
from web.auth import (
    bearer,
    check_password_hash,
    new_csrf_token,
    source_of_token,
    token_matches,
)
from web.receiver import WRITE_SCHEMA, Refused, read_writes, receive_writes

log = logging.getLogger("tdc.web")

#: A console session lasts a working day.
SESSION_SECONDS = 12 * 3600

_ERROR = {"type": "object", "required": ["detail"],
          "properties": {"detail": {"type": "string"}, "reasons": {"type": "array", "items": {"type": "string"}}}}
_RESULT = {
    "type": "object", "required": ["index", "result"],
    "properties": {
        "index": {"type": "integer", "description": "The item's position in the request."},
        "result": {"type": "string", "enum": ["accepted", "duplicate", "stale", "quarantined", "ignored",
                                              "schema_change"]},
        "unique_key": {"type": "string"},
        "reason": {"type": "string", "description": "Why it was quarantined or ignored."},
    },
}
_RECEIPT = {
    "type": "object", "required": ["results", "counts", "submitted"],
    "properties": {
        "results": {"type": "array", "items": _RESULT},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "submitted": {"type": "integer", "description": "Tasks sent to the workers (the others are already "
                      "running or wait for the rescan)."},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


class LoginRequired(Exception):
    """A page was asked for without a console session."""


def check_settings(settings: Settings) -> None:
    """Refuse to serve with a user whose password hash is malformed (no one could log in as them)."""
    for name, stored in settings.web_users.items():
        try:
            check_password_hash(stored)
        except ValueError as error:
            raise SettingsError(f"TDC_WEB_USERS: the hash of {name!r} {error}") from None


def create_app(storage: Storage | None = None) -> FastAPI:
    """The application over ``storage`` (default: the configured one)."""
    import worker  # noqa: F401 - configures the Celery app the receiver and retries send chains with

    settings = storage.settings if storage is not None else get_settings()
    check_settings(settings)
    if not settings.web_users:
        log.warning("TDC_WEB_USERS is empty: no one can log in to the console")
    secret = settings.web_secret
    if secret is None:
        secret = secrets.token_urlsafe(32)
        log.warning("TDC_WEB_SECRET is not set: console sessions use a random key and end when this server stops")

    def store() -> Storage:
        return storage if storage is not None else get_storage()

    app = FastAPI(title="tdc", version="1", docs_url=None, redoc_url=None, openapi_url=None,
                  description="The HTTP surface of tdc, the transaction data center: business writes in, "
                              "metrics out. Console pages are HTML and not described here.")
    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie="tdc_session",
                       max_age=SESSION_SECONDS, same_site="strict", https_only=False)

    @app.exception_handler(LoginRequired)
    def to_login(request: Request, _: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(Refused)
    def refused(_: Request, error: Refused) -> Response:
        body: dict[str, Any] = {"detail": error.detail}
        if error.reasons:
            body["reasons"] = error.reasons
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(body, status_code=error.status, headers=headers)

    def user_of(request: Request) -> str:
        user = request.session.get("user")
        if not isinstance(user, str) or user not in settings.web_users:
            raise LoginRequired
        return user

    def check_csrf(request: Request, token: str | None) -> None:
        expected = request.session.get("csrf")
        if not isinstance(expected, str) or not token or not secrets.compare_digest(expected, token):
            raise Refused(403, "the form's CSRF token is missing or does not match this session; reload the page")

    def csrf_of(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = request.session["csrf"] = new_csrf_token()
        return token

    def page(request: Request, template: str, **values: Any) -> HTMLResponse:
        return HTMLResponse(console.render(template, user=request.session.get("user"), csrf=csrf_of(request),
                                           path=request.url.path, **values))

    # -- the HTTP receiver ---------------------------------------------------------------------

    @app.post(
        "/api/v1/business-writes", tags=["receiver"], summary="Push business writes",
        description="A JSON list of writes, all of the token's own source. Each is answered in order: "
                    "accepted, duplicate (same unique_key and content), stale (older than what is stored), "
                    "quarantined with the reason (kept, never dropped), or ignored. Idempotent on unique_key.",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "array", "items": WRITE_SCHEMA,
                "description": f"At most {settings.receive_max_writes} writes and {settings.receive_max_bytes} "
                               "bytes per request (413 above either)."}}}},
            "security": [{"receiverToken": []}],
        },
        responses={200: _json(_RECEIPT, "What became of each write"),
                   400: _json(_ERROR, "The body is not JSON"),
                   401: _json(_ERROR, "No valid receiver token"),
                   403: _json(_ERROR, "The token writes for another source; nothing was stored"),
                   413: _json(_ERROR, "Too many writes or bytes in one request; nothing was stored"),
                   422: _json(_ERROR, "The body is not a list of writes; nothing was stored")},
    )
    async def business_writes(request: Request) -> Response:
        source = source_of_token(settings.receiver_tokens, bearer(request.headers.get("authorization")))
        if source is None:
            raise Refused(401, "a receiver token is required: Authorization: Bearer TOKEN (TDC_RECEIVER_TOKENS)")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.receive_max_bytes:
            raise Refused(413, f"the body is {declared} bytes; at most {settings.receive_max_bytes} are taken per "
                               "request (TDC_RECEIVE_MAX_BYTES): send the writes in smaller batches")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.receive_max_bytes:
                break
        items = read_writes(bytes(body), source, settings.receive_max_writes, settings.receive_max_bytes)
        from starlette.concurrency import run_in_threadpool

        receipt = await run_in_threadpool(receive_writes, store(), items)
        return JSONResponse(receipt.as_json())

    # -- metrics and the description -----------------------------------------------------------

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             openapi_extra={"security": [{"metricsToken": []}]},
             responses={200: {"description": "The Prometheus text format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                        401: _json(_ERROR, "No valid metrics token")})
    def metrics(request: Request) -> Response:
        if not token_matches(settings.metrics_token, bearer(request.headers.get("authorization"))):
            raise Refused(401, "a metrics token is required: Authorization: Bearer TOKEN (TDC_METRICS_TOKEN)")
        from models.redis_store import get_redis
        from web.metrics import render_metrics

        body, content_type = render_metrics(store(), get_redis())
        return Response(body, media_type=content_type)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> Response:
        token = bearer(request.headers.get("authorization"))
        logged_in = request.session.get("user") in settings.web_users
        if not logged_in and source_of_token(settings.receiver_tokens, token) is None:
            raise Refused(401, "log in to the console or send a receiver token to read the API description")
        return JSONResponse(_described(app))

    console.add_pages(app, store, user_of, check_csrf, page, settings)
    return app


def _described(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = app.openapi()
        schema.setdefault("components", {})["securitySchemes"] = {
            "receiverToken": {"type": "http", "scheme": "bearer", "description": "One token per source "
                              "(TDC_RECEIVER_TOKENS); it may write for its own source only."},
            "metricsToken": {"type": "http", "scheme": "bearer", "description": "TDC_METRICS_TOKEN"},
        }
    return app.openapi_schema  # type: ignore[return-value]
