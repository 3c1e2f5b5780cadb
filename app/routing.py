"""What the client's `model` (and `provider`) fields mean, before any worker is asked.

    model                         meaning
    -----                         -------
    absent, "auto"                every worker, each with its default model; the strategy decides
    an alias                      whatever the alias names (configured in MODEL_ALIASES / [aliases])
    "<provider>/<model>"          only that provider, asked for <model>; <provider> is a worker
                                  name, a provider type (ollama, gemini...) or a preset (groq...)
    anything else                 the workers that serve that model (or whose list is unknown)

A slash alone does not make a provider prefix: OpenRouter's "meta-llama/llama-3.3-70b" is a
model name, because no worker, type or preset is called "meta-llama".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from app.errors import ValidationError

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Target:
    provider: str | None
    model: str | None


def resolve_target(
    model: str | None, provider: str | None, providers: Collection[str], aliases: Mapping[str, str]
) -> Target:
    if model is None:
        return Target(provider, None)
    hops = 0
    while model in aliases and hops <= len(aliases):  # settings reject cycles; the bound is a guard
        model, hops = aliases[model], hops + 1
    if model.lower() == AUTO:
        return Target(provider, None)
    prefix, slash, rest = model.partition("/")
    if slash and rest and prefix in providers:
        if provider is not None and provider != prefix:
            raise ValidationError("model", f"names provider {prefix!r} but the request's provider is {provider!r}")
        return Target(prefix, rest)
    return Target(provider, model)
