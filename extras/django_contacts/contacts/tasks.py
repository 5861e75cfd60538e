"""The background job: import the contacts, then tell that user's page (only theirs)."""

import random
import time

from celery import shared_task
from django.conf import settings

from contacts.models import ImportJob
from cyclone_sse_client.django import send_event, user_channel


@shared_task
def import_contacts(job_id: int) -> int:
    job = ImportJob.objects.select_related("user").get(pk=job_id)
    time.sleep(settings.IMPORT_SECONDS)  # talking to the address book service
    job.imported = random.randint(10, 200)
    job.save()
    # outside a transaction: published at once; user#<pk> is readable by that user only
    send_event(user_channel(job.user), {"job": job.pk, "imported": job.imported},
               event="import-done", id=f"import-{job.pk}")
    return job.imported
