"""Settings of the contacts example (development only: the secrets are the demo's).

Environment: ``CONTACTS_DB`` (the SQLite file), ``CYCLONE_SSE_URL`` (the daemon),
``CELERY_BROKER_URL`` (Redis for Celery), ``CONTACTS_IMPORT_SECONDS`` (how long a job
takes)."""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
SECRET_KEY = "contacts-example-not-a-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "cyclone_sse_client.django",
    "contacts",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "contacts_site.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "django.contrib.auth.context_processors.auth",
                                       "django.contrib.messages.context_processors.messages"]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("CONTACTS_DB", str(HERE / "contacts.sqlite3"))}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGIN_URL = "/login"
LOGIN_REDIRECT_URL = "/"

# The daemon: twistd -n cyclone-sse --jwt-secret=... --http-secret=... (run.py starts it)
CYCLONE_SSE = {
    "URL": os.environ.get("CYCLONE_SSE_URL", "http://127.0.0.1:8888"),
    "KEY": "contacts-example-publish-key",
    "JWT_SECRET": "contacts-example-jwt-secret-of-32-bytes!",
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/3")
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "contacts")
IMPORT_SECONDS = float(os.environ.get("CONTACTS_IMPORT_SECONDS", "2"))
