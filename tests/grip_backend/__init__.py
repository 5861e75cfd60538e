"""A tiny Django backend written with django-grip, for the GRIP proxy tests."""
