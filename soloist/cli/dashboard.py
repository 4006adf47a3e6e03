"""`soloist dashboard`: the web dashboard (extra `soloist[dashboard]`)."""

from __future__ import annotations

import click

from .common import app_option, load_app


@click.command()
@app_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8800, show_default=True)
@click.option(
    "--token",
    envvar="SOLOIST_DASHBOARD_TOKEN",
    default=None,
    show_default="SOLOIST_DASHBOARD_TOKEN, else none",
    help="Protects every page and action (at least 16 characters); needed to bind to "
    "anything but loopback.",
)
@click.option("--read-only", is_flag=True, help="Show, never act (no requeue, drop, revoke).")
@click.option(
    "-Q", "--queues", default=None, show_default="none", help="More comma-separated queues to show."
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.5),
    default=2.0,
    show_default=True,
    help="Seconds between reads of the broker, whatever the number of open pages.",
)
def dashboard(
    app_path: str,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
    queues: str | None,
    refresh: float,
) -> None:
    """A web page of queues, workers, dead letters and tasks, updated live, with a JSON API
    under /api/. Binds to 127.0.0.1 unless told otherwise."""
    try:  # the extra's packages: imported only by this command
        import uvicorn

        from ..dashboard.security import MIN_TOKEN, is_loopback
        from ..dashboard.server import create_app
    except ImportError as exc:
        raise click.UsageError(
            f"the dashboard needs its extra ({exc.name} is missing): "
            "pip install 'soloist[dashboard]'"
        ) from None
    if token is not None and len(token) < MIN_TOKEN:
        raise click.BadParameter(f"at least {MIN_TOKEN} characters", param_hint="--token")
    loopback = is_loopback(host)
    if not loopback and token is None:
        raise click.UsageError(
            f"--token (or SOLOIST_DASHBOARD_TOKEN) is required to bind to {host}"
        )
    app = load_app(app_path)
    extra = [q.strip() for q in queues.split(",") if q.strip()] if queues else []
    web = create_app(
        app,
        token=token,
        read_only=read_only,
        title=app_path,
        extra_queues=extra,
        refresh=refresh,
        loopback_only=loopback,
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"soloist dashboard on http://{shown}:{port}/", err=True)
    uvicorn.run(web, host=host, port=port, log_level="warning", server_header=False)
