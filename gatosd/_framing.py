"""Sans-I/O JSONL framing: bytes in, frames (or per-line errors) out, replies to bytes.

The asyncio server is thin glue around `LineFramer`, so every framing rule is tested
without a socket. Rules:

* one JSON object per line, UTF-8; a line longer than `max_line` bytes (with or
  without its newline) yields one `TOO_LARGE` and is skipped up to its newline, so
  the connection lives on and memory stays bounded;
* a line is parsed strictly: invalid UTF-8, lone surrogates, NaN/Infinity, nesting
  deeper than 1024 and duplicate keys are `BAD_FRAME`, never a crash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from gatosd.errors import ProtocolError, bad_frame, too_large
from ledger_core import unique_pairs
from ledger_core.errors import EncodingError

DEFAULT_MAX_LINE = 1024 * 1024


@dataclass(frozen=True)
class LineError:
    """A line that could not become a frame; `id` is the request id when it could be read."""

    error: ProtocolError
    id: Any = None


def parse_frame(line: bytes) -> dict[str, Any]:
    """Parse one line into a request object.

    Raises:
        ProtocolError: `BAD_FRAME` naming what is wrong.
    """
    try:
        value = orjson.loads(line)  # strict on UTF-8, surrogates, NaN, depth
    except orjson.JSONDecodeError as exc:
        raise bad_frame(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise bad_frame(f"a frame is a JSON object, not {type(value).__name__}")
    # Cheap pre-check: every key in the text ends with `"` and (after optional blanks) a
    # colon, so the text holds at least as many `"…:` as key tokens. When that count equals
    # the keys parsed, no key token was merged into another: no duplicate. Only a `"…:`
    # inside a string value makes the slow exact check run, never a missed duplicate.
    if len(_KEY_END.findall(line)) > _count_keys(value):
        try:
            json.loads(line, object_pairs_hook=unique_pairs)
        except EncodingError as exc:
            raise bad_frame(exc.reason) from None
        except RecursionError:
            raise bad_frame("nested too deeply") from None
        except ValueError:
            pass
    return value


_KEY_END = re.compile(rb'"[ \t\r\n]*:')


def _count_keys(value: Any) -> int:
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            total += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def encode_frame(frame: dict[str, Any]) -> bytes:
    """One reply line."""
    return orjson.dumps(frame, option=orjson.OPT_APPEND_NEWLINE)


class LineFramer:
    """Splits a byte stream into lines and parses them, with a maximum line length."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held right now."""
        return len(self._buffer)

    @property
    def in_line(self) -> bool:
        """True while a line has started and not ended (held, or being dropped as too long)."""
        return bool(self._buffer) or self._discarding

    def feed(self, data: bytes) -> list[dict[str, Any] | LineError]:
        """Consume bytes; return the frames and errors of every line completed by them."""
        out: list[dict[str, Any] | LineError] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                rest = data[start:]
                if not self._discarding:
                    self._buffer += rest
                    if len(self._buffer) > self.max_line:
                        out.append(LineError(too_large(self.max_line)))
                        self._buffer.clear()
                        self._discarding = True
                return out
            chunk = data[start:newline]
            start = newline + 1
            if self._discarding:
                self._discarding = False
                continue
            if self._buffer:
                self._buffer += chunk
                line = bytes(self._buffer)
                self._buffer.clear()
            else:
                line = chunk
            if len(line) > self.max_line:
                out.append(LineError(too_large(self.max_line)))
                continue
            line = line.rstrip(b"\r")
            if not line.strip():
                continue
            out.append(self._parse(line))

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any] | LineError:
        try:
            return parse_frame(line)
        except ProtocolError as exc:
            return LineError(exc, _guess_id(line))


def _guess_id(line: bytes) -> Any:
    """Best effort: the `id` of a frame that failed for another reason (e.g. a bad field)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    # The id goes back out through orjson: only what it can encode (no lone surrogates,
    # no integers past 64 bits) may be echoed, or the error reply itself would fail.
    found = value.get("id")
    if isinstance(found, str):
        try:
            found.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return found
    if isinstance(found, int) and not isinstance(found, bool) and -2**63 <= found < 2**64:
        return found
    return None
