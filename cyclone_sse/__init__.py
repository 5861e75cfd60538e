"""cyclone-sse: a Server-Sent Events broadcasting daemon built on cyclone and Twisted."""

__version__ = "1.0.0.dev0"
