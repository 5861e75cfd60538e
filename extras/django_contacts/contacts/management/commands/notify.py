"""``python manage.py notify alice "text"``: a notification from a management command."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from cyclone_sse_client.django import send_event, user_channel


class Command(BaseCommand):
    """Sends one notification to a user's page."""

    help = "Send a notification to a user's page"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("text")

    def handle(self, *args: Any, username: str, text: str, **options: Any) -> None:
        user = get_user_model().objects.get(username=username)
        published = send_event(user_channel(user), {"text": text}, event="note")
        self.stdout.write(f"sent {published[0].id if published else '(after commit)'}")
