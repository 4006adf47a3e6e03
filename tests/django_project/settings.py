"""A minimal Django project for tests/test_django.py: one app (notes), a SQLite database
and a Soloist broker whose paths the test gives in the environment."""

import os

SECRET_KEY = "tests-only"
USE_TZ = True
INSTALLED_APPS = ["tests.django_project.notes"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["NOTES_DATABASE"],
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# Not SOLOIST_BROKER_URL: the test proves the app reads its settings, not the environment.
SOLOIST = {"broker": os.environ["NOTES_BROKER"], "default_queue": "notes"}
