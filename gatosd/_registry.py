"""The handler registry: each plane adds its methods here, the server core never changes.

A handler is `async def handler(ctx, frame) -> dict`. Long-running methods are
registered with `stream=True`: the server answers `{"ack": true, "id": …}` at once.
Any handler may push progress or data frames with `await ctx.send({...})` (keyed by
the request id, with backpressure); the first one is preceded by the ack if none was
sent yet, so a short answer stays one frame and a long one is always ack, frames,
final. The handler's return value is the final `ok` frame.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Context(Protocol):
    """What a handler may use of the connection that sent the request."""

    request_id: Any

    async def ack(self) -> None: ...

    async def send(self, frame: dict[str, Any]) -> None: ...


Handler = Callable[[Context, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    stream: bool = False
    doc: str = ""


@dataclass
class Registry:
    methods: dict[str, Method] = field(default_factory=dict)

    def add(self, name: str, handler: Handler, *, stream: bool = False, doc: str = "") -> None:
        if name in self.methods:
            raise ValueError(f"method {name!r} is registered twice")
        self.methods[name] = Method(name, handler, stream, doc or (handler.__doc__ or "").strip())

    def method(self, name: str, *, stream: bool = False) -> Callable[[Handler], Handler]:
        """Decorator form of `add`."""

        def register(handler: Handler) -> Handler:
            self.add(name, handler, stream=stream)
            return handler

        return register

    def get(self, name: str) -> Method | None:
        return self.methods.get(name)

    def names(self) -> list[str]:
        return sorted(self.methods)
