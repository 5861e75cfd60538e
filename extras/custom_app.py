"""An example ``--app``: your own cyclone Application built from cyclone-sse's parts.

Run it with::

    twistd -n cyclone-sse --app=extras.custom_app.App --http-secret=s3cret

What it changes:

* ``get_channels``: every subscriber also receives the ``announcements`` channel.
* ``authorize``: a ``private:NAME`` channel needs ``?token=`` equal to
  ``hmac_sha256(http-secret, "private:NAME")`` in hex, which your web application
  computes for its logged-in user (see ``token_for``).  The daemon also asks it, per
  channel, about every channel a pattern (``?channels=private:*``) reaches, live and in
  replay, so a pattern never reads more than the names would.  (For new code, prefer
  the built-in tokens and policies: README "Security".)
* a broker subclass: publishing to ``readonly.*`` channels is refused with 403, and
  the broker counts upstream (un)subscriptions, as a real broker would act on them.
* an extra URL, ``GET /health``.
"""

from __future__ import annotations

import hashlib
import hmac

from cyclone_sse.app import App as BaseApp
from cyclone_sse.brokers import HttpBroker
from cyclone_sse.errors import Forbidden
from cyclone_sse.handlers import BaseHandler, SubscribeHandler


def token_for(secret: str, channel: str) -> str:
    return hmac.new(secret.encode(), channel.encode(), hashlib.sha256).hexdigest()


class PrivateChannelsHandler(SubscribeHandler):
    def get_channels(self) -> list[str]:
        return [*super().get_channels(), "announcements"]

    def authorize(self, channels: list[str]) -> None:
        secret = self.application.settings_obj.http_secret
        token = self.get_argument("token", "")
        for channel in channels:
            if channel.startswith("private:") and not hmac.compare_digest(
                    token, token_for(secret, channel)):
                raise Forbidden(f"a valid token is needed for {channel}")


class GuardedBroker(HttpBroker):
    name = "guarded-http"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.upstream: dict[str, int] = {}

    def publish(self, channel, data, name=None, publisher_id=None):  # type: ignore[no-untyped-def]
        if channel.startswith("readonly."):
            raise Forbidden(f"{channel} is read-only")
        return super().publish(channel, data, name, publisher_id)

    def subscribe(self, channel: str) -> None:
        self.upstream[channel] = self.upstream.get(channel, 0) + 1

    def unsubscribe(self, channel: str) -> None:
        self.upstream[channel] -= 1


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.write_json({"ok": True, "connections": self.application.registry.connections})


class App(BaseApp):
    def build_handlers(self):  # type: ignore[no-untyped-def]
        handlers = super().build_handlers()
        handlers[0] = (r"/", PrivateChannelsHandler)
        return [*handlers, (r"/health", HealthHandler)]

    def build_broker(self) -> GuardedBroker:
        return GuardedBroker(self.registry, self.history, self.settings_obj)
