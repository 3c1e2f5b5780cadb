"""Small builders shared by the live tests."""

from __future__ import annotations

import json

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def worker_toml(
    name: str, url: str, priority: int = 10, keys: list[str] | None = None, models: tuple[str, ...] = ("fake-model",)
) -> str:
    lines = [
        "[[workers]]",
        f'name = "{name}"',
        f'base_url = "{url}"',
        f"models = {list(models)!r}".replace("'", '"'),
        f"priority = {priority}",
    ]
    if keys is not None:
        lines.append("api_keys = [" + ", ".join(f'"{k}"' for k in keys) + "]")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of printable text is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def toml_worker(**fields: object) -> str:
    """One `[[workers]]` table with any keys (`toml_worker(name="g", preset="groq", ...)`).
    A live test must never reach a real service, so `base_url` is required and on loopback."""
    url = fields.get("base_url")
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:"), f"base_url must be a fake's: {url!r}"
    return "[[workers]]\n" + "".join(f"{key} = {_toml_value(value)}\n" for key, value in fields.items())
