"""The admin API in one process (no state directory): token, validation, each action's effect,
and keys that never leave the gateway whole."""

from __future__ import annotations

import pytest

TOKEN = "admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET_A, SECRET_B = "sk-live-aaaaaaaaaaaaaaaa1111", "sk-live-bbbbbbbbbbbbbbbb2222"
TOML = f"""
[[workers]]
name = "alpha"
base_url = "http://127.0.0.1:9/v1"
models = ["m1"]
api_keys = ["{SECRET_A}", "{SECRET_B}"]
"""


@pytest.fixture
def admin(make_client):  # type: ignore[no-untyped-def]
    return make_client(env={"CORTEX_ADMIN_TOKEN": TOKEN, "DEMO_PROVIDER": "on"}, toml=TOML)


def names(client) -> list[str]:  # type: ignore[no-untyped-def]
    return [w["name"] for w in client.get("/api/admin/workers", headers=AUTH).get_json()["workers"]]


ROUTES = [
    ("get", "/api/admin/workers"),
    ("post", "/api/admin/workers"),
    ("delete", "/api/admin/workers/alpha"),
    ("post", "/api/admin/workers/alpha/keys/1/enable"),
    ("post", "/api/admin/reload"),
    ("post", "/api/admin/health-check"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_without_an_admin_token_the_admin_api_does_not_exist(make_client, method, path):
    client = make_client(toml=TOML)
    response = getattr(client, method)(path, headers=AUTH, json={})
    assert response.status_code == 404
    assert response.get_json()["error"] == "Not found"


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-000000", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"])
def test_a_missing_or_wrong_token_is_401(admin, method, path, header):
    headers = {} if header is None else {"Authorization": header}
    response = getattr(admin, method)(path, headers=headers, json={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"] == "Unauthorized"
    assert names(admin) == ["alpha", "demo"]  # nothing changed


def test_client_keys_do_not_open_the_admin_api_and_the_admin_token_is_not_a_client_key(make_client):
    client = make_client(env={"CORTEX_ADMIN_TOKEN": TOKEN, "CORTEX_API_KEYS": "client-key-123456"}, toml=TOML)
    assert client.get("/api/admin/workers", headers={"Authorization": "Bearer client-key-123456"}).status_code == 401
    assert client.get("/api/admin/workers", headers=AUTH).status_code == 200  # no client key needed
    assert (
        client.post("/api/chat", json={"messages": [{"role": "user", "content": "x"}]}, headers=AUTH).status_code == 401
    )


def test_list_shows_stats_health_circuit_and_masked_keys_only(admin):
    response = admin.get("/api/admin/workers", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert isinstance(body["pid"], int)
    alpha = body["workers"][0]
    assert alpha["name"] == "alpha" and alpha["in_flight"] == 0
    assert alpha["circuit"]["state"] == "closed" and alpha["health"]["status"] == "unknown"
    assert [k["position"] for k in alpha["keys"]] == [1, 2]
    assert alpha["keys"][0]["key"] == "sk-…1111" and alpha["keys"][0]["state"] == "ready"
    text = response.get_data(as_text=True)
    assert SECRET_A not in text and SECRET_B not in text


def test_add_a_worker_in_the_toml_shape_then_route_to_it(admin):
    response = admin.post("/api/admin/workers", headers=AUTH, json={"name": "beta", "provider": "demo", "priority": 1})
    assert response.status_code == 201
    assert response.get_json()["worker"]["name"] == "beta" and response.get_json()["worker"]["type"] == "demo"
    assert names(admin) == ["beta", "alpha", "demo"]
    chat = admin.post("/api/chat/complete", json={"messages": [{"role": "user", "content": "x"}], "provider": "beta"})
    assert chat.status_code == 200 and chat.get_json()["provider"] == "beta"
    providers = admin.get("/api/providers").get_json()
    assert "beta" in [p["name"] for p in providers["providers"]]


def test_added_keys_come_raw_or_from_the_environment_and_are_shown_masked(admin, make_client):
    raw = admin.post("/api/admin/workers", headers=AUTH, json={
        "name": "raw", "base_url": "http://127.0.0.1:9/v1", "models": ["m"], "api_keys": ["sk-raw-secret-0000009999"],
    })  # fmt: skip
    assert raw.status_code == 201 and "sk-raw-secret" not in raw.get_data(as_text=True)
    assert raw.get_json()["worker"]["keys"][0]["key"] == "sk-…9999"

    gw = admin.application.extensions["cortex"]
    gw.environ = {"EXTRA_KEYS": "sk-env-secret-000001,sk-env-secret-000002"}
    from_env = admin.post("/api/admin/workers", headers=AUTH, json={
        "name": "env", "base_url": "http://127.0.0.1:9/v1", "models": ["m"], "api_keys_env": "EXTRA_KEYS",
    })  # fmt: skip
    assert from_env.status_code == 201
    assert [k["key"] for k in from_env.get_json()["worker"]["keys"]] == ["sk-…0001", "sk-…0002"]
    assert "sk-env-secret" not in admin.get("/api/admin/workers", headers=AUTH).get_data(as_text=True)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": "x"}, "worker (x).base_url: required"),
        ({"name": "x", "provider": "nope", "base_url": "http://127.0.0.1:9"}, "unknown provider 'nope'"),
        ({"name": "x", "base_url": "http://127.0.0.1:9", "colour": "red"}, "colour"),
        (
            {"name": "x", "base_url": "http://127.0.0.1:9", "api_keys_env": "UNSET_VAR_XYZ"},
            "'UNSET_VAR_XYZ' is not set",
        ),
        ({"name": "x", "base_url": "http://127.0.0.1:9", "api_keys": ["a"], "api_keys_env": "A"}, "not both"),
        ({"base_url": "http://127.0.0.1:9"}, "worker.name"),
        (["not", "a", "table"], "worker"),
        ({"name": "x", "base_url": "http://127.0.0.1:9", "priority": "high"}, "priority"),
    ],
)
def test_an_invalid_worker_is_422_with_the_parsers_words(admin, body, expected):
    response = admin.post("/api/admin/workers", headers=AUTH, json=body)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"] == "Invalid configuration"
    assert expected in response.get_json()["details"]
    assert names(admin) == ["alpha", "demo"]


def test_a_body_that_is_not_json_is_400(admin):
    response = admin.post("/api/admin/workers", headers={**AUTH, "Content-Type": "application/json"}, data=b"{")
    assert response.status_code == 400 and response.get_json()["error"] == "Body is not valid JSON"


def test_a_duplicate_name_is_409(admin):
    response = admin.post("/api/admin/workers", headers=AUTH, json={"name": "alpha", "provider": "demo"})
    assert response.status_code == 409 and "alpha" in response.get_json()["details"]


def test_remove_a_worker_and_404_for_an_unknown_one(admin):
    assert admin.delete("/api/admin/workers/nobody", headers=AUTH).status_code == 404
    response = admin.delete("/api/admin/workers/alpha", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["removed"] == "alpha"
    assert names(admin) == ["demo"]
    assert admin.delete("/api/admin/workers/alpha", headers=AUTH).status_code == 404
    chat = admin.post("/api/chat/complete", json={"messages": [{"role": "user", "content": "x"}], "provider": "alpha"})
    assert chat.status_code == 404  # no longer a provider name a request may use
    assert "alpha" not in admin.get("/api/health").get_json()["workers"]


def test_enable_a_disabled_key_and_404_for_unknown_worker_or_key(admin):
    gw = admin.application.extensions["cortex"]
    gw.pool.get("alpha").keys.disable(1)
    before = admin.get("/api/admin/workers", headers=AUTH).get_json()["workers"][0]["keys"]
    assert [k["state"] for k in before] == ["ready", "disabled"]
    for path in ("nobody/keys/1", "alpha/keys/3", "alpha/keys/0", "demo/keys/1"):
        response = admin.post(f"/api/admin/workers/{path}/enable", headers=AUTH)
        assert response.status_code == 404, path
    response = admin.post("/api/admin/workers/alpha/keys/2/enable", headers=AUTH)
    assert response.status_code == 200
    assert [k["state"] for k in response.get_json()["worker"]["keys"]] == ["ready", "ready"]
    assert SECRET_B not in response.get_data(as_text=True)


def test_health_check_now_returns_the_fresh_snapshot(admin):
    response = admin.post("/api/admin/health-check", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert body["workers"]["demo"]["status"] == "healthy" and body["workers"]["demo"]["last_check"]
    assert body["workers"]["alpha"]["status"] == "unavailable"  # nothing listens on port 9
    assert admin.get("/api/health").get_json()["last_check"] == body["last_check"]


def test_reload_makes_the_file_the_truth_and_keeps_unchanged_workers_state(admin, tmp_path):
    gw = admin.application.extensions["cortex"]
    config = tmp_path / "cortex.toml"
    config.write_text(
        'routing_strategy = "round_robin"\n' + TOML + '\n[[workers]]\nname = "gamma"\nprovider = "demo"\n'
    )
    gw.environ = {"CORTEX_CONFIG": str(config), "CORTEX_ADMIN_TOKEN": TOKEN, "DEMO_PROVIDER": "off"}
    alpha = gw.pool.get("alpha")
    alpha.keys.disable(0)
    admin.post("/api/admin/workers", headers=AUTH, json={"name": "runtime", "provider": "demo"})

    response = admin.post("/api/admin/reload", headers=AUTH)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["workers"] == {"kept": ["alpha"], "replaced": [], "added": ["gamma"], "removed": ["demo", "runtime"]}
    assert body["restart_required"] == [] and "SIGHUP" in body["note"]
    assert names(admin) == ["alpha", "gamma"]
    assert gw.pool.get("alpha") is alpha and alpha.keys.stats(0)[0]["state"] == "disabled"
    assert gw.strategy.name == "round_robin" and gw.dispatcher.strategy.name == "round_robin"


def test_reload_with_an_invalid_file_is_422_and_changes_nothing(admin, tmp_path):
    gw = admin.application.extensions["cortex"]
    config = tmp_path / "cortex.toml"
    config.write_text('[[workers]]\nname = "broken"\nprovider = "nope"\n')
    gw.environ = {"CORTEX_CONFIG": str(config)}
    response = admin.post("/api/admin/reload", headers=AUTH)
    assert response.status_code == 422
    assert "nothing changed" in response.get_json()["details"] and "unknown provider" in response.get_json()["details"]
    assert names(admin) == ["alpha", "demo"]


def test_reload_names_edge_settings_that_need_a_restart(admin, tmp_path):
    gw = admin.application.extensions["cortex"]
    config = tmp_path / "cortex.toml"
    config.write_text('rate_limit = "5/minute"\n' + TOML)
    gw.environ = {"CORTEX_CONFIG": str(config), "CORTEX_ADMIN_TOKEN": "another-token-123456", "MAX_BODY_BYTES": "4096"}
    body = admin.post("/api/admin/reload", headers=AUTH).get_json()
    assert body["restart_required"] == ["rate_limit", "admin_token", "max_body_bytes"]
    assert admin.get("/api/admin/workers", headers=AUTH).status_code == 200  # the old token still works
    assert gw.settings.edges.rate_limit is None
