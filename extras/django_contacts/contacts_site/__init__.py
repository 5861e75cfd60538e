"""The contacts example site: its settings, URLs and Celery app."""

from contacts_site.celery import app as celery_app

__all__ = ["celery_app"]
