"""Edge settings (app/edge_settings.py): rate limits, CORS origins, clients, admin token,
log format, per-worker rpm; each invalid value names its source and never echoes a secret."""

from __future__ import annotations

import pytest

from app.config_values import ConfigError
from app.edge_settings import Edges
from app.settings import load_settings


def test_defaults_turn_every_edge_off():
    edges = load_settings({}).edges
    assert edges == Edges()
    assert edges.rate_limit is None and edges.cors_origins == () and not edges.auth_required
    assert edges.admin_token is None and edges.log_format == "text" and edges.log_content is False


def test_environment_values():
    edges = load_settings(
        {
            "RATE_LIMIT": "60/minute; 1000 per hour",
            "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0",
            "TRUSTED_PROXIES": "1",
            "CORS_ORIGINS": "https://app.example.com, http://localhost:3000/",
            "CORTEX_API_KEYS": "client-key-one,client-key-two",
            "CORTEX_ADMIN_TOKEN": "admin-token-123",
            "LOG_FORMAT": "JSON",
            "LOG_CONTENT": "true",
            "CORTEX_STATE_DIR": "/tmp/cortex-state",
        }
    ).edges
    assert edges.rate_limit == "60/minute;1000 per hour"
    assert edges.ratelimit_storage_uri == "redis://127.0.0.1:6379/0"
    assert edges.trusted_proxies == 1
    assert edges.cors_origins == ("https://app.example.com", "http://localhost:3000")
    assert [(c.name, c.key, c.rate_limit) for c in edges.clients] == [
        ("key-1", "client-key-one", None),
        ("key-2", "client-key-two", None),
    ]
    assert edges.admin_token == "admin-token-123" and edges.log_format == "json" and edges.log_content
    assert edges.state_dir == "/tmp/cortex-state"


def test_toml_clients_with_their_own_limits_and_the_environment_winning():
    toml = """
rate_limit = "10/minute"
cors_origins = ["*"]
[[clients]]
name = "team-a"
key_env = "TEAM_A_KEY"
rate_limit = "600/minute"
[[clients]]
name = "team-b"
key = "team-b-inline-key"
"""
    edges = load_settings({"TEAM_A_KEY": "team-a-secret-key", "RATE_LIMIT": "5/second"}, toml).edges
    assert edges.rate_limit == "5/second" and edges.cors_origins == ("*",)
    assert [(c.name, c.rate_limit) for c in edges.clients] == [("team-a", "600/minute"), ("team-b", None)]


def test_worker_rpm_from_toml_and_environment():
    toml = '[[workers]]\nname = "w"\nbase_url = "http://127.0.0.1:9/v1"\nmodels = ["m"]\nrpm = 30\n'
    settings = load_settings({"GROQ_API_KEYS": "gsk_x", "GROQ_RPM": "25", "DEMO_PROVIDER": "off"}, toml)
    assert {w.name: w.rpm for w in settings.workers} == {"w": 30, "groq": 25}


@pytest.mark.parametrize(
    ("env", "toml", "names"),
    [
        ({"RATE_LIMIT": "lots"}, None, "RATE_LIMIT"),
        ({"RATE_LIMIT": "60/fortnight"}, None, "RATE_LIMIT"),
        ({}, "rate_limit = 60", "CORTEX_CONFIG rate_limit"),
        ({"RATELIMIT_STORAGE_URI": "postgres://db"}, None, "RATELIMIT_STORAGE_URI"),
        ({"TRUSTED_PROXIES": "-1"}, None, "TRUSTED_PROXIES"),
        ({"CORS_ORIGINS": "*,https://a.example"}, None, "CORS_ORIGINS"),
        ({"CORS_ORIGINS": "app.example.com"}, None, "CORS_ORIGINS"),
        ({"CORTEX_API_KEYS": "short"}, None, "CORTEX_API_KEYS"),
        ({"CORTEX_ADMIN_TOKEN": "tiny"}, None, "CORTEX_ADMIN_TOKEN"),
        ({"LOG_FORMAT": "xml"}, None, "LOG_FORMAT"),
        ({"LOG_CONTENT": "maybe"}, None, "LOG_CONTENT"),
        ({}, '[[clients]]\nname = "a"\n', "clients[0] (a)"),
        ({}, '[[clients]]\nname = "a"\nkey_env = "NOPE"\n', "NOPE"),
        ({}, '[[clients]]\nname = "a"\nkey = "aaaaaaaaaa"\nrate_limit = "x"\n', "rate_limit"),
        ({"CORTEX_API_KEYS": "same-key-123"}, '[[clients]]\nname = "a"\nkey = "same-key-123"\n', "twice"),
        ({}, '[[workers]]\nname = "w"\nbase_url = "http://127.0.0.1:9"\nrpm = 0\n', "rpm"),
    ],
)
def test_invalid_values_name_their_source(env, toml, names):
    with pytest.raises(ConfigError, match=names.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_settings(env, toml)


def test_secrets_never_appear_in_errors_or_reprs():
    with pytest.raises(ConfigError) as caught:
        load_settings({"CORTEX_API_KEYS": "good-key-1234,bad key"})
    assert "good-key-1234" not in str(caught.value) and "bad key" not in str(caught.value)
    settings = load_settings({"CORTEX_API_KEYS": "client-secret-1", "CORTEX_ADMIN_TOKEN": "admin-secret-1"})
    assert "client-secret-1" not in repr(settings) and "admin-secret-1" not in repr(settings)


def test_the_live_gauge_modes_are_prometheus_clients():
    from prometheus_client.metrics import Gauge

    from app.state_dir import LIVE_GAUGE_MODES

    assert set(LIVE_GAUGE_MODES) == {m for m in Gauge._MULTIPROC_MODES if m.startswith("live")}
