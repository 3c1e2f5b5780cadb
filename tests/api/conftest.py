"""The app in-process, through Flask's test client: validation and error shapes."""

from __future__ import annotations

import pytest

from app import create_app
from app.settings import load_settings


@pytest.fixture
def make_client():  # type: ignore[no-untyped-def]
    def make(env: dict[str, str] | None = None, toml: str | None = None):  # type: ignore[no-untyped-def]
        settings = load_settings({"DEMO_DELAY_MS": "0", **(env or {})}, toml)
        return create_app(settings).test_client()

    return make


@pytest.fixture
def client(make_client):  # type: ignore[no-untyped-def]
    return make_client()
