"""``POST /publish/``: Pushpin's publish API (``{"items": [...]}``), so gripcontrol,
pubcontrol and django-grip publish to cyclone-sse unchanged (see ``cyclone_sse.pushpin``
for what each format becomes)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from twisted.internet import defer

from cyclone_sse.auth.publishers import Proof
from cyclone_sse.checks import check_message, loads
from cyclone_sse.errors import Unauthorized
from cyclone_sse.handlers.publish import PublishHandler
from cyclone_sse.pushpin import body_events
from cyclone_sse.transports.grip import close_held


class PushpinPublishHandler(PublishHandler):
    """Pushpin's publish endpoint.  Its clients authenticate as they do with Pushpin:
    a JWT signed with the control key (``--grip-key``; its ``iss`` checked against
    ``--grip-iss`` when set), the key itself as a Bearer value, or Basic auth whose
    password is the key; cyclone-sse's own publish key and publisher tokens work too."""

    def authenticate(self) -> Proof:
        publishers = self.application.pushpin_publishers
        if publishers.open:
            return True  # nothing configured: as open as /publish (loopback only)
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[2]
            except (binascii.Error, ValueError, UnicodeDecodeError):
                raise Unauthorized("unreadable Basic credentials") from None
        elif scheme.lower() != "bearer":
            raise Unauthorized("send the control key or a token (Authorization: Bearer)")
        return publishers.proof(value)

    def post(self) -> defer.Deferred[object]:  # type: ignore[override]
        proof = self.authenticate()
        events = body_events(loads(self.request.body))
        channels = list(dict.fromkeys(e.channel for e in events))
        for event in events:
            check_message(event.channel, event.data, event.name, event.publisher_id)
        self.application.pushpin_publishers.check_rights(proof, None, channels)
        broker = self.application.broker
        registry = self.application.registry
        # issued in item order, so the history numbers them in that order; a close is
        # for GRIP-held clients only, after what was published before it
        d = defer.gatherResults([
            close_held(registry, e.channel, e.grip) if e.grip is not None and e.grip.closes
            else broker.publish(e.channel, e.data, e.name, e.publisher_id, e.grip)
            for e in events], consumeErrors=True)
        d.addCallback(self._published)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        return d  # type: ignore[return-value]

    def _published(self, results: list[Any]) -> None:
        published = [r for r in results if r is not None]  # (closes publish no event)
        self.write_json({"status": "ok", "events": [r.as_json() for r in published],
                         "subscribers": sum(r.subscribers for r in published)})

