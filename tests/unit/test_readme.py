"""The README's configuration examples are real: every TOML block loads, and every variable the
Behaviour table documents exists in the settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import _SCALARS, load_settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", README, flags=re.S)
ENV = {name: "key-1,key-2" for name in re.findall(r"api_keys_env = \"(\w+)\"", README)}


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
