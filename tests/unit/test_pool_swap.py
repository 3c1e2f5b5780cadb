"""Swapping the pool: unchanged workers keep their state, what derives from the pool follows."""

from __future__ import annotations

from types import MappingProxyType

from app.admin_bus import ADD, REMOVE, AdminOp
from app.gateway import Gateway
from app.health import HEALTHY, UNAVAILABLE, UNKNOWN, HealthSnapshot, WorkerHealth
from app.settings import load_settings

BASE = """
[[workers]]
name = "one"
base_url = "http://127.0.0.1:9/v1"
models = ["m1"]
api_keys = ["sk-one-key-aaaa1111", "sk-one-key-bbbb2222"]

[[workers]]
name = "two"
preset = "groq"
base_url = "http://127.0.0.1:9/v1"
api_keys = ["sk-two-key-cccc3333"]
"""


def gateway(toml: str = BASE) -> Gateway:
    return Gateway(load_settings({"DEMO_PROVIDER": "off"}, toml))


def test_unchanged_workers_keep_keys_circuit_and_health_changed_ones_start_fresh():
    gw = gateway()
    one, two = gw.pool.get("one"), gw.pool.get("two")
    assert one is not None and two is not None
    one.keys.disable(1)
    one.keys.record_attempt(0, 100.0)
    one.circuit.record_failure(100.0)
    two.keys.disable(0)
    gw.health.snapshot = HealthSnapshot(
        MappingProxyType({"one": WorkerHealth(HEALTHY, 1.0), "two": WorkerHealth(UNAVAILABLE, 1.0)}), 1.0
    )
    iterating = iter(gw.pool)  # a reader that started before the swap

    changed = BASE.replace("sk-two-key-cccc3333", "sk-two-key-dddd4444") + THREE  # two's spec differs
    change = gw.reconfigure(load_settings({"DEMO_PROVIDER": "off"}, changed))

    assert change.kept == ("one",) and change.replaced == ("two",) and change.added == ("three",)
    assert change.removed == ()
    assert gw.pool.get("one") is one
    assert [s["state"] for s in one.keys.stats(100.0)] == ["ready", "disabled"] and one.keys.stats(100.0)[0][
        "used"
    ] == 1
    assert one.circuit.consecutive_failures == 1
    assert gw.pool.get("two") is not two and gw.pool.get("two").keys.stats(0)[0]["state"] == "ready"  # type: ignore[union-attr]
    assert gw.health.snapshot.of("one").status == HEALTHY
    assert gw.health.snapshot.of("two").status == UNAVAILABLE  # health is by name: kept until the next probe
    assert gw.health.snapshot.of("three").status == UNKNOWN
    assert [w.name for w in iterating] == ["one", "two"]  # finished over the set it started with


THREE = """
[[workers]]
name = "three"
provider = "demo"
"""


def test_removed_workers_leave_the_snapshot_and_the_provider_names():
    gw = gateway()
    assert {"one", "two", "groq", "openai_compat"} <= gw.dispatcher.provider_names
    gw.health.snapshot = HealthSnapshot(MappingProxyType({"two": WorkerHealth(HEALTHY, 1.0)}), 1.0)
    change = gw.reconfigure(load_settings({"DEMO_PROVIDER": "off"}, BASE.split('[[workers]]\nname = "two"')[0]))
    assert change.removed == ("two",)
    assert "two" not in gw.health.snapshot.workers
    assert "groq" not in gw.dispatcher.provider_names and "one" in gw.dispatcher.provider_names


def test_runtime_add_and_remove_through_the_ops(tmp_path):
    gw = gateway()
    added = gw.apply(gw.prepare(AdminOp(ADD, worker={"name": "extra", "provider": "demo", "priority": 1})), True)
    assert added is gw.pool.get("extra") and "extra" in gw.dispatcher.provider_names
    assert gw.pool.get("extra").spec.key_strategy == gw.settings.key_strategy  # type: ignore[union-attr]
    kept = gw.pool.get("one")
    gw.apply(gw.prepare(AdminOp(REMOVE, name="extra")), True)
    assert gw.pool.names == ("one", "two") and gw.pool.get("one") is kept
    assert "extra" not in gw.dispatcher.provider_names


def test_reload_applies_dispatch_settings_and_keeps_edges_until_a_restart():
    gw = gateway()
    one = gw.pool.get("one")
    new = load_settings(
        {"DEMO_PROVIDER": "off", "ROUTING_STRATEGY": "latency", "LATENCY_EXPLORE": "0.5", "CIRCUIT_FAILURES": "2",
         "MAX_ATTEMPTS": "3", "MODEL_ALIASES": "fast=one/m1", "RATE_LIMIT": "1/second", "UPSTREAM_POOL_SIZE": "5"},
        BASE,
    )  # fmt: skip
    change = gw.reconfigure(new)
    assert change.kept == ("one", "two") and change.restart_required == ("rate_limit", "upstream_pool_size")
    assert gw.pool.get("one") is one and one.circuit.failure_threshold == 2  # type: ignore[union-attr]
    assert gw.dispatcher.strategy.name == "latency" and gw.strategies["latency"].epsilon == 0.5  # type: ignore[attr-defined]
    assert gw.dispatcher.settings.max_attempts == 3 and gw.settings.model_aliases == {"fast": "one/m1"}
    assert gw.settings.edges.rate_limit is None and gw.settings.upstream_pool_size == 1000
