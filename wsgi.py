"""Gunicorn's entry point: gevent patches the standard library before anything else is imported."""

from gevent import monkey

monkey.patch_all()

from app import create_app  # noqa: E402  (must come after patching)

app = create_app()
