"""``{% load cyclone_sse %}{% cyclone_sse_stream "notifications" %}``: the bundled client
and a stream of the logged-in user's own channel, with a fresh token."""

from __future__ import annotations

import json
import re
from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse
from django.utils.html import escape
from django.utils.safestring import mark_safe

from cyclone_sse_client.django import config, subscriber_token, user_channel

register = template.Library()
_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")
_ESCAPES = {ord("<"): "\\u003C", ord(">"): "\\u003E", ord("&"): "\\u0026"}


def _js(value: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value).translate(_ESCAPES)


@register.simple_tag(takes_context=True)
def cyclone_sse_stream(context: Any, name: str = "cycloneSSE", *channels: str) -> str:
    """A ``<script>`` loading ``/static/cyclone-sse.js`` from the daemon and
    ``window.<name> = CycloneSSE.connect(...)`` on the user's channel (and ``channels``,
    which the token then allows).  The token is rendered fresh and renewed through the
    token view when it expires (if its URL is included).  Nothing for anonymous users."""
    if not _NAME.match(name):
        raise template.TemplateSyntaxError(f"cyclone_sse_stream: {name!r} is no JS name")
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return ""
    c = config()
    extra = list(channels)
    token = _js(subscriber_token(user, extra or None))
    try:
        refresh_url = _js(reverse("cyclone_sse:token"))
    except NoReverseMatch:
        refresh_url = None
    if refresh_url:  # the rendered token first; fresh ones from the token view later
        token = ("(function () { let first = " + token + "; return function () {"
                 " if (first) { const t = first; first = null; return t; }"
                 f" return fetch({refresh_url}, {{credentials: 'same-origin'}})"
                 ".then((r) => r.json()).then((j) => j.token); }; })()")
    public = str(c["PUBLIC_URL"]).rstrip("/")
    return mark_safe(
        f'<script src="{escape(public)}/static/cyclone-sse.js"></script>\n'
        f"<script>\nwindow.{name} = CycloneSSE.connect({_js(public + '/')}, "
        f"{{channels: {_js([user_channel(user), *extra])}, token: {token}}});\n</script>")
