"""The dashboard's web app (Starlette): the page, its static files, and the JSON API.

API (every answer JSON; with a token, each needs the session cookie or a Bearer token):

    GET  /api/session                     csrf token, read_only, app, broker (password masked)
    GET  /api/overview                    queues, workers, throughput per minute (last hour)
    GET  /api/dead-letters[?queue=Q]      the oldest 100 of each queue, arguments cut
    GET  /api/dead-letters/{queue}/{id}   one, arguments up to 2,000 characters
    POST /api/dead-letters/requeue        {"queue": Q, "ids": [...] or null for all}
    POST /api/dead-letters/drop           the same
    GET  /api/schedules                   periodic tasks: schedule, next runs, last tick
    GET  /api/tasks/{id}                  state, result or error, who runs it, its dead letter
    POST /api/tasks/{id}/revoke           {"terminate": false}

POSTs from a browser need the `X-Soloist-CSRF` header (see soloist.dashboard.security).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..app import App
from ..urls import passwords, redact, scrub
from .board import Board
from .security import COOKIE, LOOPBACK_NAMES, Guard

log = logging.getLogger("soloist.dashboard")

STATIC = Path(__file__).parent / "static"
#: Largest POST body read: ids of dead letters are short.
MAX_BODY = 256 * 1024
#: Sent with every answer: no inline script or style runs, nothing loads from elsewhere,
#: no other site may frame the page.
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
#: Paths served without logging in: the login form and the page's script and style.
OPEN_PATHS = ("/login", "/static/")

_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Soloist dashboard: log in</title>
<link rel="stylesheet" href="/static/dashboard.css"></head>
<body><main class="login"><h1>Soloist dashboard</h1>
<form method="post" action="/login"><label>Token <input type="password" name="token"
autofocus autocomplete="current-password"></label> <button type="submit">Log in</button></form>
<p class="error">{error}</p></main></body></html>
"""


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def create_app(
    app: App,
    *,
    token: str | None = None,
    read_only: bool = False,
    title: str = "",
    extra_queues: Sequence[str] = (),
    refresh: float = 1.0,
    loopback_only: bool = True,
) -> Starlette:
    """The dashboard of `app` as an ASGI app. `loopback_only`: answer only requests whose
    Host is a loopback name (the command sets it when it binds to loopback)."""
    board = Board(app, extra_queues, refresh)
    guard = Guard(token, read_only)
    hidden = passwords(app.broker_url) | passwords(app.result_url) | ({token} if token else set())

    def answer(data: Any, status: int = 200) -> Response:
        # Masked over the whole text: an error a client library raised may quote a URL.
        body = scrub(json.dumps(data, default=repr), hidden)
        return Response(body, status, media_type="application/json")

    def api(
        fn: Callable[[Request], Awaitable[Any]], action: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if action:
                refused = guard.refuse_action(request)
                if refused is not None:
                    return answer({"error": refused[1]}, refused[0])
            try:
                return answer(await fn(request))
            except _Refused as exc:
                return answer({"error": str(exc)}, exc.status)
            except Exception as exc:  # the broker or store failed: say so, keep serving
                log.warning("dashboard: %s failed: %s", request.url.path, scrub(str(exc), hidden))
                return answer({"error": f"{type(exc).__name__}: {exc}"}, 503)

        return endpoint

    async def payload(request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY:
            raise _Refused(413, "request body too large")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise _Refused(413, "request body too large")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise _Refused(400, "the body must be JSON") from None
        if not isinstance(data, dict):
            raise _Refused(400, "the body must be a JSON object")
        return data

    async def session(request: Request) -> Any:
        return {
            "csrf": guard.csrf(request),
            "read_only": read_only,
            "auth": token is not None,
            "app": title,
            "broker": redact(app.broker_url or ""),
            "refresh": refresh,
        }

    async def overview(request: Request) -> Any:
        return await run_in_threadpool(board.overview)

    async def dead_list(request: Request) -> Any:
        return await run_in_threadpool(board.dead_letters, request.query_params.get("queue"))

    async def dead_one(request: Request) -> Any:
        p = request.path_params
        found = await run_in_threadpool(board.dead_letter, p["queue"], p["id"])
        if found is None:
            raise _Refused(404, "no such dead letter (requeued or dropped?)")
        return found

    def settle(requeue: bool) -> Callable[[Request], Awaitable[Any]]:
        async def act(request: Request) -> Any:
            data = await payload(request)
            queue, ids = data.get("queue"), data.get("ids")
            if not isinstance(queue, str) or not queue:
                raise _Refused(400, "give the queue")
            if ids is not None and not (
                isinstance(ids, list) and all(isinstance(i, str) for i in ids)
            ):
                raise _Refused(400, "ids must be a list of strings, or null for all")
            moved = await run_in_threadpool(board.settle_dead, queue, ids, requeue)
            return {"requeued" if requeue else "dropped": moved}

        return act

    async def schedules(request: Request) -> Any:
        return await run_in_threadpool(board.schedules)

    async def task(request: Request) -> Any:
        return await run_in_threadpool(board.task, request.path_params["id"])

    async def revoke(request: Request) -> Any:
        data = await payload(request)
        terminate = data.get("terminate", False)
        if not isinstance(terminate, bool):
            raise _Refused(400, "terminate must be true or false")
        done = await run_in_threadpool(board.revoke, request.path_params["id"], terminate)
        return {"revoked": done}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(_LOGIN.format(error=""))
        raw = await request.body()
        given = parse_qs(raw[:4096].decode(errors="replace")).get("token", [""])[0]
        if not guard.check_token(given):
            return HTMLResponse(_LOGIN.format(error="Wrong token."), 401)
        response = RedirectResponse("/", 303)
        response.set_cookie(COOKIE, guard.session(), httponly=True, samesite="strict")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login" if token else "/", 303)
        response.delete_cookie(COOKIE)
        return response

    async def gate(request: Request, call_next: RequestResponseEndpoint) -> Response:
        if not request.url.path.startswith(OPEN_PATHS) and not guard.allowed(request):
            if request.url.path.startswith("/api/"):
                response: Response = answer({"error": "log in first"}, 401)
            else:
                response = RedirectResponse("/login", 303)
        else:
            response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    routes = [
        Route("/", index),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/session", api(session)),
        Route("/api/overview", api(overview)),
        Route("/api/dead-letters", api(dead_list)),
        Route("/api/dead-letters/requeue", api(settle(True), True), methods=["POST"]),
        Route("/api/dead-letters/drop", api(settle(False), True), methods=["POST"]),
        Route("/api/dead-letters/{queue}/{id}", api(dead_one)),
        Route("/api/schedules", api(schedules)),
        Route("/api/tasks/{id}", api(task)),
        Route("/api/tasks/{id}/revoke", api(revoke, True), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    middleware = [Middleware(BaseHTTPMiddleware, dispatch=gate)]
    if loopback_only:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES))
    return Starlette(routes=routes, middleware=middleware)
