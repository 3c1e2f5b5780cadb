"""The README's configuration examples are real: every TOML block loads, and every variable the
Behaviour table documents exists in the settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import _SCALARS, load_settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", README, flags=re.S)
ENV = {name: "key-1,key-2" for name in re.findall(r"api_keys_env = \"(\w+)\"", README)} | {
    name: f"client-key-{name}" for name in re.findall(r"key_env = \"(\w+)\"", README)
}


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=[f"toml-{i}" for i in range(len(TOML_BLOCKS))])
def test_every_toml_example_loads(block):
    settings = load_settings(ENV, block)
    assert settings.workers


def test_every_documented_top_level_variable_is_read():
    table = README[README.index("## Behaviour") : README.index("## Server (gunicorn)")]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, flags=re.M))
    known = {var for var, _ in _SCALARS} | {"CONNECT_TIMEOUT", "FIRST_TOKEN_TIMEOUT", "IDLE_TIMEOUT",
                                           "REQUEST_TIMEOUT", "MODEL_ALIASES", "CORTEX_CONFIG"}  # fmt: skip
    assert documented <= known, documented - known
    assert {var for var, _ in _SCALARS} - {"DEMO_PROVIDER", "DEMO_DELAY_MS"} <= documented


def test_every_variable_of_the_operating_reference_is_read():
    """Each documented edge variable changes the settings when set (so none is a typo)."""
    table = README[README.index("### Configuration reference") : README.index("### Client keys")]
    documented = set(re.findall(r"^\| `([A-Z_]+)`", table, flags=re.M))
    samples = {
        "CORTEX_API_KEYS": "client-key-1234", "CORTEX_ADMIN_TOKEN": "admin-token-1234", "RATE_LIMIT": "5/minute",
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0", "TRUSTED_PROXIES": "1",
        "CORS_ORIGINS": "https://app.example", "LOG_FORMAT": "json", "LOG_CONTENT": "true",
        "CORTEX_STATE_DIR": "/tmp/cortex-state", "REDIS_URL": "redis://127.0.0.1:6379/0", "INSTANCE_ID": "gw-a",
    }  # fmt: skip
    assert documented - {"PROMETHEUS_MULTIPROC_DIR"} == set(samples)
    default = load_settings({}).edges
    for name, value in samples.items():
        assert load_settings({name: value}).edges != default, name
