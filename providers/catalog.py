"""Every provider type Cortex speaks, and the well-known services that are presets of them.

Data, not subclasses: a provider type is its pure `WireProtocol` plus how it describes itself;
a preset is a URL, a default model and a priority for one service (Groq, OpenAI, Gemini...).
Settings and the worker pool read this table; adding a provider is one module and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from providers import anthropic, cohere, gemini, ollama, openai_compat
from providers.base import ProviderInfo, WireProtocol


@dataclass(frozen=True, slots=True)
class ProviderType:
    name: str
    protocol: WireProtocol
    info: ProviderInfo
    #: Priority of a worker of this type when the configuration gives none (lower is tried first).
    default_priority: int


@dataclass(frozen=True, slots=True)
class Preset:
    """A well-known service: configuration picks it by name (`GROQ_API_KEYS`, or `preset = "groq"`)."""

    name: str
    provider: str
    base_url: str
    default_model: str
    priority: int


#: Lower priority numbers are tried first: local servers, then free tiers, then paid services.
PROVIDERS: Mapping[str, ProviderType] = {
    # Local servers: free, so tried first under the priority strategy. No preset: OLLAMA_URLS lists them.
    "ollama": ProviderType("ollama", ollama.PROTOCOL, ollama.INFO, default_priority=0),
    "openai_compat": ProviderType("openai_compat", openai_compat.PROTOCOL, openai_compat.INFO, default_priority=10),
    "gemini": ProviderType("gemini", gemini.PROTOCOL, gemini.INFO, default_priority=30),
    "cohere": ProviderType("cohere", cohere.PROTOCOL, cohere.INFO, default_priority=40),
    "anthropic": ProviderType("anthropic", anthropic.PROTOCOL, anthropic.INFO, default_priority=60),
}

PRESETS: Mapping[str, Preset] = {
    "groq": Preset("groq", "openai_compat", "https://api.groq.com/openai/v1", "llama-3.1-8b-instant", priority=20),
    "gemini": Preset(
        "gemini", "gemini", "https://generativelanguage.googleapis.com/v1beta", "gemini-3.5-flash-lite", priority=30
    ),
    "cohere": Preset("cohere", "cohere", "https://api.cohere.com", "command-a-03-2025", priority=40),
    "openrouter": Preset(
        "openrouter", "openai_compat", "https://openrouter.ai/api/v1", "meta-llama/llama-3.3-70b-instruct:free", 50
    ),
    "anthropic": Preset("anthropic", "anthropic", "https://api.anthropic.com", "claude-haiku-4-5", priority=60),
    "openai": Preset("openai", "openai_compat", "https://api.openai.com/v1", "gpt-4o-mini", priority=70),
}
