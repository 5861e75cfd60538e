"""An import of a user's contacts, run in the background."""

from django.conf import settings
from django.db import models


class ImportJob(models.Model):
    """One import: started by a user, finished by a Celery task."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    started = models.DateTimeField(auto_now_add=True)
    imported = models.IntegerField(null=True)  # contacts imported, once done
