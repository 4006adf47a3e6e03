"""Found by autodiscovery: nothing imports this module before a worker needs it."""

import os

from soloist.contrib.django import app

from .models import Note


@app.task
def write_note(text: str) -> int:
    return Note.objects.create(text=text, pid=os.getpid()).pk
