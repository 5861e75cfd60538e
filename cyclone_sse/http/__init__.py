"""The HTTP/1.1 layer: ``parse`` reads request heads and bodies into values (pure: bytes
in, values or a refusal out); the Twisted side is ``cyclone_sse.connection``."""
