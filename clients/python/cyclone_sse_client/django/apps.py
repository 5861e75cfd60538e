"""The Django app configuration."""

from django.apps import AppConfig


class CycloneSSEConfig(AppConfig):
    """``cyclone_sse_client.django``: its template tags and the token view."""

    name = "cyclone_sse_client.django"
    label = "cyclone_sse"
    verbose_name = "cyclone-sse"
