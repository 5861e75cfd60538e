"""The token view: a fresh subscriber token for the logged-in user's page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from cyclone_sse_client.django import subscriber_token


def token(request: HttpRequest) -> Any:
    """``{"token": ...}`` for the logged-in user (401 otherwise), never cached."""
    if not request.user.is_authenticated:
        response = JsonResponse({"error": "log in first"}, status=401)
    else:
        response = JsonResponse({"token": subscriber_token(request.user)})
    response["Cache-Control"] = "no-store"
    return response
