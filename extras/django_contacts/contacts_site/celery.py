"""The Celery app of the contacts example (Redis as its broker)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "contacts_site.settings")
app = Celery("contacts_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
