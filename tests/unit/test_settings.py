"""Configuration: environment first, TOML for many workers, and a ConfigError that names
the variable or key for everything invalid."""

from __future__ import annotations

import pytest

from app.settings import ConfigError, load_from_environment, load_settings
from providers.base import Timeouts


def test_defaults_give_the_demo_provider_only():
    settings = load_settings({})
    assert [w.name for w in settings.workers] == ["demo"]
    assert settings.demo_only and settings.routing_strategy == "priority"
    assert settings.health_check_interval == 30 and settings.timeouts == Timeouts()


def test_groq_preset_from_environment():
    settings = load_settings({"GROQ_API_KEYS": " gsk_one , gsk_two ,", "GROQ_MODEL": "llama-3.3-70b-versatile"})
    (groq,) = settings.workers
    assert groq.name == "groq" and groq.preset == "groq" and groq.provider == "openai_compat"
    assert groq.base_url == "https://api.groq.com/openai/v1"
    assert groq.api_keys == ("gsk_one", "gsk_two")
    assert groq.models == ("llama-3.3-70b-versatile",) and groq.default_model == "llama-3.3-70b-versatile"
    assert "gsk_" not in repr(groq) and "gsk_" not in repr(settings)


def test_openai_compat_urls_named_and_unnamed():
    settings = load_settings({
        "OPENAI_COMPAT_URLS": "http://127.0.0.1:8080/v1, vllm=http://gpu-box:8000/v1/, http://h/v1?api-version=2",
        "OPENAI_COMPAT_MODEL": "qwen2.5", "OPENAI_COMPAT_PRIORITY": "3",
    })  # fmt: skip
    assert [(w.name, w.base_url, w.priority, w.models) for w in settings.workers] == [
        ("compat-1", "http://127.0.0.1:8080/v1", 3, ("qwen2.5",)),
        ("vllm", "http://gpu-box:8000/v1", 3, ("qwen2.5",)),
        ("compat-3", "http://h/v1?api-version=2", 3, ("qwen2.5",)),
    ]


TOML = """
routing_strategy = "local_first"
health_check_interval = 10
[timeouts]
first_token = 20
[[workers]]
name = "local"
base_url = "http://127.0.0.1:11434/v1"
models = ["llama3.2", "qwen2.5"]
priority = 1
[workers.timeouts]
first_token = 120
[[workers]]
name = "groq-team"
preset = "groq"
api_keys_env = "TEAM_GROQ_KEYS"
"""


def test_toml_workers_with_presets_env_keys_and_timeouts():
    settings = load_settings({"TEAM_GROQ_KEYS": "gsk_a,gsk_b", "HEALTH_CHECK_INTERVAL": "5"}, TOML)
    assert settings.routing_strategy == "priority"
    assert settings.health_check_interval == 5  # the environment wins over the file
    local, team = settings.workers
    assert local.default_model == "llama3.2" and local.priority == 1
    assert local.timeouts == Timeouts(connect=5, first_token=120, idle=60, total=600)
    assert team.base_url.startswith("https://api.groq.com") and team.api_keys == ("gsk_a", "gsk_b")
    assert team.priority == 20 and team.models == ("llama-3.1-8b-instant",)
    assert settings.timeouts.first_token == 20


@pytest.mark.parametrize(
    ("env", "toml", "names"),
    [
        ({"ROUTING_STRATEGY": "fastest"}, None, "ROUTING_STRATEGY"),
        ({"HEALTH_CHECK_INTERVAL": "often"}, None, "HEALTH_CHECK_INTERVAL"),
        ({"HEALTH_CHECK_INTERVAL": "-1"}, None, "HEALTH_CHECK_INTERVAL"),
        ({"FIRST_TOKEN_TIMEOUT": "0"}, None, "FIRST_TOKEN_TIMEOUT"),
        ({"REQUEST_TIMEOUT": "inf"}, None, "REQUEST_TIMEOUT"),
        ({"DEMO_PROVIDER": "maybe"}, None, "DEMO_PROVIDER"),
        ({"LOG_LEVEL": "loud"}, None, "LOG_LEVEL"),
        ({"OPENAI_COMPAT_URLS": "localhost:8080"}, None, "OPENAI_COMPAT_URLS"),
        ({"OPENAI_COMPAT_URLS": "ftp://x/v1"}, None, "OPENAI_COMPAT_URLS"),
        ({"OPENAI_COMPAT_URLS": "http://user:pw@x/v1"}, None, "OPENAI_COMPAT_URLS"),
        ({"OPENAI_COMPAT_URLS": "http://x:99999/v1"}, None, "OPENAI_COMPAT_URLS"),
        ({"OPENAI_COMPAT_URLS": "bad name=http://x/v1"}, None, "OPENAI_COMPAT_URLS"),
        ({"OPENAI_COMPAT_URLS": "a=http://x/v1,a=http://y/v1"}, None, "'a' is used twice"),
        ({"GROQ_API_KEYS": "k1,k1"}, None, "GROQ_API_KEYS"),
        ({"GROQ_API_KEYS": "gsk_a", "GROQ_PRIORITY": "high"}, None, "GROQ_PRIORITY"),
        ({}, "not toml [", "CORTEX_CONFIG"),
        ({}, "colour = 'red'", "CORTEX_CONFIG: unknown key 'colour'"),
        ({}, "workers = 3", "CORTEX_CONFIG workers"),
        ({}, "[[workers]]\nbase_url = 'http://x'", "workers[0].name"),
        ({}, "[[workers]]\nname = 'w'", "workers[0] (w).base_url"),
        ({}, "[[workers]]\nname = 'w'\nprovider = 'bard'", "workers[0] (w).provider"),
        ({}, "[[workers]]\nname = 'w'\npreset = 'nope'", "workers[0] (w).preset"),
        ({}, "[[workers]]\nname = 'w'\nbase_url = 'http://x'\nprioirty = 1", "unknown key 'prioirty'"),
        ({}, "[[workers]]\nname = 'w'\nbase_url = 'http://x'\npriority = 1.5", "workers[0] (w).priority"),
        ({}, "[[workers]]\nname = 'w'\nbase_url = 'http://x'\npriority = true", "workers[0] (w).priority"),
        ({}, "[[workers]]\nname = 'w'\nbase_url = 'http://x'\napi_keys = 'a b'", "workers[0] (w).api_keys"),
        ({}, "[[workers]]\nname = 'w'\nbase_url = 'http://x'\napi_keys_env = 'MISSING'", "api_keys_env"),
        (
            {},
            "[[workers]]\nname = 'w'\nbase_url = 'http://x'\n[workers.timeouts]\nidle = -3",
            "workers[0] (w).timeouts.idle",
        ),
        ({}, "[[workers]]\nname = 'w'\nbase_url = 'http://x'\n[workers.timeouts]\nread = 3", "unknown key 'read'"),
        ({}, "[timeouts]\nconnect = 'fast'", "CORTEX_CONFIG timeouts.connect"),
        ({"KEY_STRATEGY": "lru"}, None, "KEY_STRATEGY: unknown key strategy 'lru'"),
        ({}, "key_strategy = 'lru'", "CORTEX_CONFIG key_strategy"),
        ({}, "[[workers]]\nname = 'w'\nbase_url = 'http://x'\nkey_strategy = 3", "workers[0] (w).key_strategy"),
        ({"CIRCUIT_FAILURES": "-1"}, None, "CIRCUIT_FAILURES"),
        ({"CIRCUIT_FAILURES": "2.5"}, None, "CIRCUIT_FAILURES"),
        ({"CIRCUIT_COOLDOWN": "soon"}, None, "CIRCUIT_COOLDOWN"),
        ({}, "circuit_cooldown = 0", "CORTEX_CONFIG circuit_cooldown"),
        ({"MAX_ATTEMPTS": "-3"}, None, "MAX_ATTEMPTS"),
        ({"RETRY_BACKOFF_BASE": "-0.1"}, None, "RETRY_BACKOFF_BASE"),
        ({"RETRY_BACKOFF_BASE": "1", "RETRY_BACKOFF_MAX": "0.5"}, None, "RETRY_BACKOFF_MAX: must be at least"),
        ({}, "retry_backoff_max = 0.1", "CORTEX_CONFIG retry_backoff_max: must be at least"),
        ({"LATENCY_EXPLORE": "1.5"}, None, "LATENCY_EXPLORE"),
    ],
)
def test_invalid_configuration_names_its_source(env, toml, names):
    with pytest.raises(ConfigError) as info:
        load_settings(env, toml)
    assert names in str(info.value)


def test_keys_never_appear_in_config_errors():
    with pytest.raises(ConfigError) as info:
        load_settings({"GROQ_API_KEYS": "gsk_secret_value,gsk_secret_value"})
    assert "gsk_secret" not in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="CORTEX_CONFIG: cannot read"):
        load_from_environment({"CORTEX_CONFIG": str(tmp_path / "absent.toml")})
    path = tmp_path / "cortex.toml"
    path.write_text("[[workers]]\nname = 'w'\nbase_url = 'http://127.0.0.1:1/v1'\n")
    assert [w.name for w in load_from_environment({"CORTEX_CONFIG": str(path)}).workers] == ["w"]


def test_demo_can_be_forced_on_or_off():
    assert [w.name for w in load_settings({"DEMO_PROVIDER": "off"}).workers] == []
    env = {"OPENAI_COMPAT_URLS": "http://x/v1", "DEMO_PROVIDER": "on"}
    assert [w.name for w in load_settings(env).workers] == ["compat-1", "demo"]


def test_every_openai_compatible_preset_reads_its_own_variables():
    settings = load_settings(
        {"OPENAI_API_KEYS": "sk-a", "OPENROUTER_API_KEYS": "sk-or-b", "OPENROUTER_MODEL": "x/y:free"}
    )
    by_name = {w.name: w for w in settings.workers}
    assert set(by_name) == {"openai", "openrouter"}
    assert by_name["openai"].base_url == "https://api.openai.com/v1" and by_name["openai"].provider == "openai_compat"
    assert by_name["openrouter"].default_model == "x/y:free"
    assert by_name["openai"].priority > by_name["openrouter"].priority  # paid after free


def test_toml_preset_implies_its_provider_and_rejects_another():
    (worker,) = load_settings(
        {}, '[[workers]]\nname = "or"\npreset = "openrouter"\napi_keys = ["k1"]\nstream = false'
    ).workers
    assert worker.provider == "openai_compat" and worker.base_url == "https://openrouter.ai/api/v1"
    assert worker.stream is False
    with pytest.raises(ConfigError, match=r"workers\[0\] \(x\)\.preset: 'groq' is a openai_compat preset, not demo"):
        load_settings({}, '[[workers]]\nname = "x"\nprovider = "demo"\npreset = "groq"')


def test_resilience_defaults():
    settings = load_settings({})
    assert (settings.key_strategy, settings.circuit_failures, settings.circuit_cooldown) == ("round_robin", 5, 30)
    assert (settings.max_attempts, settings.retry_backoff_base, settings.retry_backoff_max) == (6, 0.25, 2)
    assert settings.latency_explore == 0.1
    assert {w.key_strategy for w in settings.workers} == {"round_robin"}


RESILIENCE_TOML = """
key_strategy = "least_used"
circuit_failures = 3
circuit_cooldown = 12.5
max_attempts = 0
retry_backoff_base = 0.5
retry_backoff_max = 4
latency_explore = 0.2
[[workers]]
name = "own"
base_url = "http://x/v1"
key_strategy = "Random"
[[workers]]
name = "inherits"
base_url = "http://y/v1"
"""


def test_resilience_from_toml_with_the_environment_winning_and_a_worker_choosing_its_own():
    settings = load_settings({"CIRCUIT_FAILURES": "0", "GROQ_API_KEYS": "gsk_a"}, RESILIENCE_TOML)
    assert settings.circuit_failures == 0  # the environment wins (0: no breaker)
    assert (settings.circuit_cooldown, settings.max_attempts, settings.latency_explore) == (12.5, 0, 0.2)
    assert (settings.retry_backoff_base, settings.retry_backoff_max) == (0.5, 4)
    assert settings.key_strategy == "least_used"
    by_name = {w.name: w.key_strategy for w in settings.workers}
    assert by_name == {"own": "random", "inherits": "least_used", "groq": "least_used"}
    env_wins = load_settings({"KEY_STRATEGY": "random"}, RESILIENCE_TOML)
    assert env_wins.key_strategy == "random" and env_wins.workers[1].key_strategy == "random"


def test_ollama_urls_from_environment():
    settings = load_settings({
        "OLLAMA_URLS": "http://127.0.0.1:11434, http://gpu-box:11434/", "OLLAMA_MODEL": "llama3.2",
        "OLLAMA_KEEP_ALIVE": "-1", "OLLAMA_API_KEYS": "proxy-key",
    })  # fmt: skip
    assert [(w.name, w.provider, w.base_url, w.priority, w.models, w.keep_alive) for w in settings.workers] == [
        ("ollama-1", "ollama", "http://127.0.0.1:11434", 0, ("llama3.2",), "-1"),
        ("ollama-2", "ollama", "http://gpu-box:11434", 0, ("llama3.2",), "-1"),
    ]
    assert settings.workers[0].api_keys == ("proxy-key",) and "proxy-key" not in repr(settings)
    (single,) = load_settings({"OLLAMA_URLS": "http://127.0.0.1:11434", "OLLAMA_KEEP_ALIVE": "10m"}).workers
    assert (single.name, single.priority, single.keep_alive, single.models) == ("ollama", 0, "10m", ())
    (named,) = load_settings({"OLLAMA_URLS": "box=http://box:11434", "OLLAMA_PRIORITY": "5"}).workers
    assert (named.name, named.priority, named.keep_alive) == ("box", 5, None)


def test_ollama_worker_from_toml():
    toml = '[[workers]]\nname = "local"\nprovider = "ollama"\nbase_url = "http://127.0.0.1:11434"\nmodels = ["qwen3"]\nkeep_alive = "10m"'
    (worker,) = load_settings({}, toml).workers
    assert (worker.provider, worker.priority, worker.keep_alive, worker.default_model) == ("ollama", 0, "10m", "qwen3")
    (forever,) = load_settings({}, toml.replace('"10m"', "-1")).workers
    assert forever.keep_alive == "-1"


@pytest.mark.parametrize("value", ["10 minutes", "5M", "inf", "m"])
def test_invalid_keep_alive_names_its_source(value):
    with pytest.raises(ConfigError, match="OLLAMA_KEEP_ALIVE"):
        load_settings({"OLLAMA_URLS": "http://127.0.0.1:11434", "OLLAMA_KEEP_ALIVE": value})
    with pytest.raises(ConfigError, match=r"workers\[0\] \(w\)\.keep_alive"):
        load_settings(
            {}, f'[[workers]]\nname = "w"\nprovider = "ollama"\nbase_url = "http://h"\nkeep_alive = "{value}"'
        )


def test_a_toml_worker_taking_a_presets_keys_variable_replaces_the_environment_worker():
    toml = '[[workers]]\nname = "groq"\npreset = "groq"\napi_keys_env = "GROQ_API_KEYS"\nmodels = ["a", "b"]'
    (worker,) = load_settings({"GROQ_API_KEYS": "gsk_1,gsk_2"}, toml).workers
    assert worker.models == ("a", "b") and worker.api_keys == ("gsk_1", "gsk_2")
