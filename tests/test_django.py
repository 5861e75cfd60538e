"""The Django app of the Python client, in the real contacts example project
(extras/django_contacts) against a real daemon: send_event and transactions, the
template tag and its token, the token view, async and management-command publishing;
and the whole seed-003 scenario — Django, a real Celery worker on Redis, the daemon —
with two users in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from tests.daemon import DEADLINE, Daemon, SSEClient
from tests.services import REDIS, free_port, require
from tests.test_browser import browser  # noqa: F401
from tests.test_browser import pytestmark as needs_chromium

SITE = Path(__file__).resolve().parent.parent / "extras" / "django_contacts"


@pytest.fixture(scope="module")
def django_site(tmp_path_factory):
    """The example project's settings, on a database of the test's own."""
    os.environ["CONTACTS_DB"] = str(tmp_path_factory.mktemp("django") / "db.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "contacts_site.settings"
    sys.path.insert(0, str(SITE))
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    from django.conf import settings
    return settings


@pytest.fixture
def site(django_site, tmp_path):
    """A daemon with the project's keys, and the project pointed at it."""
    keys = django_site.CYCLONE_SSE
    daemon = Daemon(tmp_path, f"--http-secret={keys['KEY']}",
                    f"--jwt-secret={keys['JWT_SECRET']}")
    original = django_site.CYCLONE_SSE
    django_site.CYCLONE_SSE = {**original, "URL": f"http://127.0.0.1:{daemon.port}"}
    yield daemon
    django_site.CYCLONE_SSE = original
    daemon.stop()


def user_stream(daemon, user):
    from cyclone_sse_client.django import subscriber_token, user_channel
    channel = user_channel(user).replace("#", "%23")
    return SSEClient(daemon.port, f"channels={channel}&token={subscriber_token(user)}")


def make_user():
    from django.contrib.auth import get_user_model
    return get_user_model().objects.create_user("u" + secrets.token_hex(4), password="pw")


def test_send_event_waits_for_the_commit_and_a_rollback_sends_nothing(site):
    from django.db import transaction

    from cyclone_sse_client import Publisher
    from cyclone_sse_client.django import config, send_event, user_channel
    user = make_user()
    stream, channel = user_stream(site, user), user_channel(user)
    direct = Publisher(config()["URL"], key=config()["KEY"])
    with transaction.atomic():
        assert send_event(channel, "after commit") is None  # queued for the commit
        direct.publish(channel, "inside the transaction")
    assert [e["data"] for e in stream.events(2)] == ["inside the transaction",
                                                     "after commit"]
    with pytest.raises(RuntimeError), transaction.atomic():
        send_event(channel, "rolled back")
        raise RuntimeError("the change fails")
    published = send_event(channel, "next")  # outside a transaction: at once
    assert published is not None and published[0].channel == channel
    assert [e["data"] for e in stream.events(3)][2] == "next"  # nothing in between


def test_the_template_tag_renders_the_users_stream_with_a_fresh_token(site):
    from django.contrib.auth.models import AnonymousUser
    from django.template import Context, Template, TemplateSyntaxError
    from django.test import RequestFactory

    from cyclone_sse_client.django import config
    user = make_user()
    request = RequestFactory().get("/")
    request.user = user
    template = Template("{% load cyclone_sse %}{% cyclone_sse_stream 'feed' 'news.*' %}")
    html = template.render(Context({"request": request}))
    public = config()["PUBLIC_URL"]
    assert f'<script src="{public}/static/cyclone-sse.js"></script>' in html
    assert f'window.feed = CycloneSSE.connect("{public}/", ' in html
    assert f'{{channels: ["user#{user.pk}", "news.*"], ' in html
    assert "/cyclone-sse/token" in html  # renewed through the token view
    token = re.search(r'let first = "([^"]+)"', html).group(1)
    claims = jwt.decode(token, config()["JWT_SECRET"], algorithms=["HS256"])
    assert claims["sub"] == str(user.pk) and claims["channels"] == ["news.*"]
    request.user = AnonymousUser()
    assert template.render(Context({"request": request})) == ""
    with pytest.raises(TemplateSyntaxError):
        Template("{% load cyclone_sse %}{% cyclone_sse_stream 'a-b' %}").render(
            Context({"request": request}))
    stream = SSEClient(site.port, f"channels=user%23{user.pk}&token={token}")
    assert stream.status == 200  # the daemon takes the rendered token


def test_the_token_view_and_async_and_command_publishing(site):
    from django.core.management import call_command
    from django.test import Client

    from cyclone_sse_client.django import asend_event, user_channel
    user = make_user()
    client = Client()
    assert client.get("/cyclone-sse/token").status_code == 401
    client.force_login(user)
    answer = client.get("/cyclone-sse/token")
    assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
    stream = SSEClient(site.port, f"channels=user%23{user.pk}&token={answer.json()['token']}")
    published = asyncio.run(asend_event(user_channel(user), {"from": "async"}))
    call_command("notify", user.username, "from a command", stdout=open(os.devnull, "w"))
    events = stream.events(2)
    assert events[0] == {"id": published[0].id, "event": "message",
                         "data": '{"from":"async"}'}
    assert (events[1]["event"], json.loads(events[1]["data"])) == \
        ("note", {"text": "from a command"})


@needs_chromium
def test_a_finished_background_job_notifies_its_user_only(tmp_path, browser):  # noqa: F811
    """Seed 003: alice starts an import; a Celery worker finishes it; her page shows the
    notification, bob's does not — and bob's own import reaches only bob."""
    require(REDIS, "Redis")
    port, daemon_port = free_port(), free_port()
    env = {**os.environ, "CONTACTS_DB": str(tmp_path / "site.sqlite3"),
           "CELERY_QUEUE": "contacts-" + secrets.token_hex(4),
           "CONTACTS_IMPORT_SECONDS": "0.5", "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    run = subprocess.Popen([sys.executable, str(SITE / "run.py"), f"--port={port}",
                            f"--daemon-port={daemon_port}"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pages = {}
    try:
        output = []
        for line in run.stdout:
            output.append(line)
            if line.startswith("ready:"):
                break
        else:
            pytest.fail("run.py never got ready:\n" + "".join(output))
        for name in ("alice", "bob"):
            page = browser.new_context().new_page()
            page.goto(f"http://127.0.0.1:{port}/login")
            page.fill("#id_username", name)
            page.fill("#id_password", name)
            page.click("button[type=submit]")
            page.wait_for_selector("body[data-live=yes]", timeout=DEADLINE * 1000)
            pages[name] = page
        pages["alice"].click("#start")
        pages["alice"].wait_for_selector("#notifications li", timeout=DEADLINE * 1000)
        assert pages["bob"].locator("#notifications li").count() == 0
        pages["bob"].click("#start")
        pages["bob"].wait_for_selector("#notifications li", timeout=DEADLINE * 1000)
        for name in ("alice", "bob"):
            items = pages[name].locator("#notifications li").all_inner_texts()
            assert len(items) == 1 and items[0].startswith("Imported "), (name, items)
    finally:
        for page in pages.values():
            page.context.close()
        run.terminate()
        try:
            run.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            run.kill()
        run.stdout.close()
