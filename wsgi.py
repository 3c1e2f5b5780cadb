"""The WSGI entry point for gunicorn (`wsgi:app`). gunicorn imports it in each worker after
gevent has patched that process; nothing else belongs here."""

from app import create_app

app = create_app()
