"""Start fake upstreams on demand and stop every one of them afterwards: the body of the
`fake_*` factory fixtures, usable at any fixture scope."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, Self, TypeVar


class Fake(Protocol):
    def start(self) -> Self: ...

    def stop(self) -> None: ...


F = TypeVar("F", bound=Fake)


@contextmanager
def fake_factory(cls: Callable[..., F]) -> Iterator[Callable[..., F]]:
    """Yield `make(**kwargs)`, which starts one `cls(**kwargs)` on 127.0.0.1; on exit, stop
    all the fakes it started."""
    started: list[F] = []

    def make(**kwargs: Any) -> F:
        fake = cls(**kwargs).start()
        started.append(fake)
        return fake

    try:
        yield make
    finally:
        for fake in started:
            fake.stop()
