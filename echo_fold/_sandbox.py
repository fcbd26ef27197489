"""The deterministic Lua 5.4 sandbox a fold program runs in (lupa).

One `Sandbox` is one fresh Lua runtime for one fold run: the trusted prelude
(`_prelude.py`) builds the program's environment from a whitelist, installs the
instruction-count hook (fuel) and the sorted `pairs`, and gives back a runner the
Python side drives. Memory is capped by lupa's allocator (`max_memory`). A runtime
that raised is never reused: a fold that fails leaves nothing behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from lupa import lua54

from echo_fold._numeric import to_signed64
from echo_fold._prelude import PRELUDE
from echo_fold.errors import FuelExhausted, MemoryExhausted, ProgramError, StateError
from ledger_core import parse_json
from ledger_core.errors import EncodingError

DEFAULT_FUEL = 10_000_000
"""Lua instructions one event (or `init`) may run."""
DEFAULT_MEMORY = 512 * 1024 * 1024
"""Bytes the whole Lua runtime (program, state and one batch of events) may hold."""
HOOK_EVERY = 1000

SeedFor = Callable[[int], tuple[int, int]]


def _deny_attributes(obj: object, name: object, is_setting: bool) -> object:
    raise AttributeError("Python attributes are not reachable from a fold")


def _first_line(message: str) -> str:
    return message.split("\nstack traceback:", 1)[0].strip()


class Sandbox:
    """A Lua runtime holding one fold program and its state.

    Args:
        source: the program text (Lua 5.4; bytecode is refused).
        name: the program's name in error messages.
        channels: the declared channels, main first.
        seed_for: global event index -> `(initstate, initseq)` of its pcg32 stream.
        fuel: instructions allowed per event, counted in steps of 1000.
        memory: bytes the runtime may allocate.

    Raises:
        ProgramError: syntax error, missing `step`, or `init` failed.
    """

    def __init__(self, source: bytes, name: str, channels: Sequence[str], seed_for: SeedFor, *,
                 fuel: int = DEFAULT_FUEL, memory: int = DEFAULT_MEMORY) -> None:
        self.name = name
        self.channels = list(channels)
        self.dead = False
        self._lua = lua54.LuaRuntime(
            register_eval=False, register_builtins=False, unpack_returned_tuples=True,
            attribute_filter=_deny_attributes, max_memory=memory)

        def seed(index: int) -> tuple[int, int]:
            # Lua integers are signed 64-bit: pass the same bits as signed values.
            state, stream = seed_for(int(index))
            return to_signed64(state), to_signed64(stream)

        try:
            make_runner = self._lua.execute("return function(...) " + PRELUDE + " end")
        except lua54.LuaError as exc:  # pragma: no cover - the prelude is ours
            raise ProgramError(f"the sandbox could not start: {_first_line(str(exc))}") from None
        self._runner = self._guard(lambda: make_runner(max(1, fuel // HOOK_EVERY), seed), "start")
        self._lua_channels = self._lua.table_from(self.channels)
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError:
            raise ProgramError(f"{name}: the program is not UTF-8 text") from None
        if text.startswith("\x1bLua"):
            raise ProgramError(f"{name}: precompiled Lua bytecode is not accepted")
        self._guard(lambda: self._runner.load(text, name, self._lua_channels), "init")

    def _guard(self, call: Callable[[], Any], where: str) -> Any:
        if self.dead:
            raise ProgramError(f"{self.name}: the sandbox already failed and cannot be reused")
        try:
            return call()
        except lua54.LuaMemoryError:
            self.dead = True
            raise MemoryExhausted(
                f"{self.name}: the fold went over its memory limit ({where})") from None
        except lua54.LuaError as exc:
            self.dead = True
            message = _first_line(str(exc))
            exhausted = False
            with contextlib.suppress(lua54.LuaError, AttributeError):
                exhausted = bool(self._runner.exhausted())
            if exhausted or message.startswith("gatos:fuel:"):
                raise FuelExhausted(f"{self.name}: the fold ran out of fuel ({where})") from None
            if message.startswith("gatos:state:"):
                raise StateError(f"{self.name}: state cannot be stored: "
                                 f"{message.removeprefix('gatos:state: ')}") from None
            for prefix in ("gatos:syntax: ", "gatos:program: "):
                message = message.removeprefix(prefix)
            raise ProgramError(f"{self.name}: {message} ({where})") from None
        except RecursionError:
            self.dead = True
            raise ProgramError(f"{self.name}: nested too deeply ({where})") from None

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state by a stored one (`{channel: value}` as read from a checkpoint)."""
        table = self._lua.table_from(state, recursive=True)
        self._guard(lambda: self._runner.restore(table), "restore")

    def run(self, events: Sequence[dict[str, Any]], base: int) -> None:
        """Fold `events` in order; `base` is the global index of the event before the first."""
        if not events:
            return
        batch = self._lua.table_from(events, recursive=True)
        self._guard(lambda: self._runner.run(batch, len(events), base), "event")

    def run_flat(self, flat: list[Any], count: int, base: int, packed: str | None = None) -> None:
        """As `run`, with the events given as flat `(type, ulid, cid, actor, commit,
        policy_root, payload, ts, caps)` nonets (`None` where absent); or, with `packed`
        (`ulid ‖ cid ‖ commit` of every event, 26 + 59 + 40 ASCII characters each), as
        `(type, actor, policy_root, payload, ts, caps)` sextets."""
        if not count:
            return
        table = self._lua.table_from(flat, recursive=True)
        self._guard(lambda: self._runner.run_flat(table, count, base, packed), "event")

    def run_chunk(self, chunk: bytes, count: int, base: int, packed: str) -> None:
        """As `run_flat` with `packed`, the sextets given as a Lua text chunk
        (`return{...}`, see native/src/luatext.rs) that builds the same table."""
        if count:
            self._guard(lambda: self._runner.run_chunk(chunk, count, base, packed), "event")

    def failed_at(self) -> int:
        """The global index of the event being folded when the runtime failed (0 = init)."""
        try:
            return int(self._runner.current())
        except (lua54.LuaError, TypeError):
            return 0

    def encode(self) -> dict[str, Any]:
        """The state as `{channel: value}`, checked to survive a store-and-reload exactly.

        Raises:
            StateError: a float, a non-UTF-8 string, a shared or cyclic table, a metatable,
                a key that is neither a string nor part of a sequence, an undeclared channel.
        """
        parts = self._guard(lambda: self._runner.encode(self._lua_channels), "encode")
        out: dict[str, Any] = {}
        for i, channel in enumerate(self.channels, start=1):
            text = parts[i]
            try:
                out[channel] = parse_json(text.encode("utf-8") if isinstance(text, str) else text,
                                          f"channel {channel}")
            except EncodingError as exc:
                raise StateError(f"{self.name}: channel {channel}: {exc.reason}") from None
        return out

    def memory_used(self) -> int:
        return int(self._lua.get_memory_used() or 0)
