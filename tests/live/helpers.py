"""Small builders shared by the live tests."""

from __future__ import annotations

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
