"""Found by autodiscovery: nothing imports this module before a worker needs it."""

import os
from typing import Any

from django.db.backends.signals import connection_created

from soloist.contrib.django import app

from .models import Note

#: Database connections this process opened.
opened = 0


def _opened(sender: Any, **info: Any) -> None:
    global opened
    opened += 1


connection_created.connect(_opened)


@app.task
def write_note(text: str) -> int:
    return Note.objects.create(text=text, pid=os.getpid()).pk


@app.task
def count_notes() -> list[int]:
    """[this process's pid, connections it opened so far] after a query."""
    Note.objects.count()
    return [os.getpid(), opened]
