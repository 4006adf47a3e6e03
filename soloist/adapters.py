"""Apps of other frameworks that a Soloist worker runs through an adapter: Celery's.

The CLI and the processes pool's children load an app by its `module:attribute` path;
what they find there may be a Soloist App or, say, a `celery.Celery` instance, which
runs through `soloist.celery` (the `celery` extra) and is imported only then.
"""

from __future__ import annotations

from .app import App


def as_app(obj: object) -> App | None:
    """`obj` itself if it is an App, an adapter's App view of it if it is another
    framework's app, else None."""
    if isinstance(obj, App):
        return obj
    if is_celery_app(obj):
        from .celery import CeleryApp  # imports celery: the optional extra

        return CeleryApp(obj)
    return None


def is_celery_app(obj: object) -> bool:
    """True for a `celery.Celery` instance, told without importing celery."""
    return any(
        cls.__module__ == "celery.app.base" and cls.__name__ == "Celery"
        for cls in type(obj).__mro__
    )
