"""twistd plugin: ``twistd -n cyclone-sse [options]``."""

from twisted.application.service import ServiceMaker

cyclone_sse = ServiceMaker(
    "cyclone-sse",
    "cyclone_sse.service",
    "Server-Sent Events broadcasting server with channels, replay and brokers",
    "cyclone-sse",
)
