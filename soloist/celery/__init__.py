"""Run an unchanged Celery app on Soloist's worker: `soloist worker -A proj.celery:app`.

`pip install 'soloist[celery]'`. The package speaks Celery's side of every seam: its
message protocol (`protocol`), kombu's Redis queue layout (`broker`), Celery's Redis
result format (`results`), its revoke broadcasts (`control`), and runs each task through
Celery's own tracer (`execution`). `app.CeleryApp` ties them into a Soloist App.
Importing it imports celery; Soloist imports it only for a Celery app.
"""

from __future__ import annotations

from .app import CeleryApp

__all__ = ["CeleryApp"]
