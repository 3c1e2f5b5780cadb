"""What `model` means: auto, aliases, provider/model, and slashes that are part of a model name."""

from __future__ import annotations

import pytest

from app.errors import ValidationError
from app.routing import Target, resolve_target
from app.settings import ConfigError, load_settings

PROVIDERS = {"groq", "ollama", "ollama-1", "openai_compat", "gemini"}
ALIASES = {"fast": "groq/llama-3.1-8b-instant", "default": "auto", "quick": "fast"}


@pytest.mark.parametrize(
    ("model", "provider", "expected"),
    [
        (None, None, Target(None, None)),
        ("auto", None, Target(None, None)),
        ("AUTO", "groq", Target("groq", None)),
        ("groq/llama-3.1-8b-instant", None, Target("groq", "llama-3.1-8b-instant")),
        ("ollama/llama3.2", None, Target("ollama", "llama3.2")),
        ("ollama-1/qwen2.5:7b", "ollama-1", Target("ollama-1", "qwen2.5:7b")),
        ("meta-llama/llama-3.3-70b-instruct:free", None, Target(None, "meta-llama/llama-3.3-70b-instruct:free")),
        ("gemini/", None, Target(None, "gemini/")),
        ("fast", None, Target("groq", "llama-3.1-8b-instant")),
        ("quick", None, Target("groq", "llama-3.1-8b-instant")),
        ("default", None, Target(None, None)),
        ("llama3.2", "ollama", Target("ollama", "llama3.2")),
    ],
)
def test_resolve_target(model, provider, expected):
    assert resolve_target(model, provider, PROVIDERS, ALIASES) == expected


def test_a_prefix_that_contradicts_the_provider_field_is_a_validation_error():
    with pytest.raises(ValidationError, match="names provider 'groq' but the request's provider is 'gemini'"):
        resolve_target("groq/x", "gemini", PROVIDERS, {})


def test_aliases_from_environment_and_toml():
    settings = load_settings({"MODEL_ALIASES": "fast=groq/llama-3.1-8b-instant, smart=gemini/gemini-2.5-flash"},
                             '[aliases]\nsmart = "anthropic/claude"\ncheap = "fast"')  # fmt: skip
    assert settings.model_aliases == {
        "smart": "gemini/gemini-2.5-flash",
        "cheap": "fast",
        "fast": "groq/llama-3.1-8b-instant",
    }
    with pytest.raises(ConfigError, match="MODEL_ALIASES: expected name=target"):
        load_settings({"MODEL_ALIASES": "fast"})
    with pytest.raises(ConfigError, match="refers to itself"):
        load_settings({"MODEL_ALIASES": "a=b,b=a"})
