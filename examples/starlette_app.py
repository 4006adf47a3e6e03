"""Starlette (FastAPI is Starlette underneath: the same two handlers work as FastAPI
routes): enqueue in a request, poll the result.

    soloist worker -A examples.tasks                                        # the worker
    gunicorn -w 4 -k uvicorn.workers.UvicornWorker examples.starlette_app:web
    # or: uvicorn --workers 4 examples.starlette_app:web

Sending and reading a result wait on the broker and the result store, which must not
block the event loop: `enqueue` (async, to read the body) sends in Starlette's thread
pool; `poll` is a plain function, which Starlette runs there itself.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from examples.tasks import add, status


async def enqueue(request: Request) -> JSONResponse:
    body = await request.json()
    result = await run_in_threadpool(add.delay, body["x"], body["y"])
    return JSONResponse({"id": result.id}, status_code=202)


def poll(request: Request) -> JSONResponse:
    return JSONResponse(status(request.path_params["task_id"]))


web = Starlette(
    routes=[
        Route("/add", enqueue, methods=["POST"]),
        Route("/tasks/{task_id}", poll),
    ]
)
