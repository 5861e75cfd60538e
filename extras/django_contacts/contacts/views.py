"""The page with the import button and the notification box."""

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from contacts.models import ImportJob
from contacts.tasks import import_contacts


@login_required
def home(request: HttpRequest) -> HttpResponse:
    jobs = ImportJob.objects.filter(user=request.user).order_by("-started")[:5]
    return render(request, "contacts/home.html", {"jobs": jobs})


@login_required
@require_POST
def start_import(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        job = ImportJob.objects.create(user=request.user)
        # the worker must find the job: queue the task once the row is committed
        transaction.on_commit(lambda: import_contacts.delay(job.pk))
    return redirect("home")
