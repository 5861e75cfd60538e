"""``path("cyclone-sse/", include("cyclone_sse_client.django.urls"))``."""

from django.urls import path

from cyclone_sse_client.django import views

app_name = "cyclone_sse"
urlpatterns = [path("token", views.token, name="token")]
