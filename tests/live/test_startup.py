"""Start-up under gunicorn: invalid configuration stops it with one clear line."""

from __future__ import annotations

import pytest

from tests.gateway_process import GatewayProcess


@pytest.mark.parametrize(
    ("env", "toml", "expected"),
    [
        (
            {"ROUTING_STRATEGY": "fastest"},
            "",
            "cortex: configuration error: ROUTING_STRATEGY: unknown routing strategy 'fastest'",
        ),
        (
            {},
            "[[workers]]\nname = 'x'\nbase_url = 'localhost'\n",
            "cortex: configuration error: CORTEX_CONFIG workers[0] (x).base_url",
        ),
    ],
)
def test_invalid_configuration_stops_startup_with_a_clear_message(tmp_path, env, toml, expected):
    process = GatewayProcess(tmp_path, toml=toml, env=env)
    with pytest.raises(RuntimeError, match="gateway exited with 1"):
        process.start(timeout=20)
    process.stop()
    log = process.log()
    assert expected in log
    assert "Traceback" not in log
