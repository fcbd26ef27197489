"""Blocking byte transports of the sync client: a socket (unix or TCP) or a child's pipes.

Each offers the same four operations — wait until readable, read what is there, write
all of a buffer, close — so `Client` is one loop over `ClientProtocol` whatever the
transport. Reads never block past the caller's deadline: `wait_readable` is a
`select` with the remaining time, and `read` is called only once it said yes.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import tempfile
from typing import IO, Protocol

from gatosd._client_requests import stdio_command, stdio_env

CHUNK = 1 << 16


class Transport(Protocol):
    def wait_readable(self, timeout: float | None) -> bool: ...

    def read(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def eof_detail(self) -> str: ...


class SocketTransport:
    """A connected stream socket. Writes use the socket timeout; reads wait with select."""

    def __init__(self, sock: socket.socket, write_timeout: float | None) -> None:
        self.sock = sock
        sock.settimeout(write_timeout)

    @classmethod
    def unix(cls, path: str, timeout: float | None) -> SocketTransport:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return cls(sock, timeout)

    @classmethod
    def tcp(cls, host: str, port: int, timeout: float | None) -> SocketTransport:
        return cls(socket.create_connection((host, port), timeout=timeout), timeout)

    def wait_readable(self, timeout: float | None) -> bool:
        readable, _, _ = select.select([self.sock], [], [], timeout)
        return bool(readable)

    def read(self) -> bytes:
        try:
            return self.sock.recv(CHUNK)
        except (ConnectionError, OSError):
            return b""

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def eof_detail(self) -> str:
        return ""


class ProcessTransport:
    """`gatosd --stdio` as a child process: requests on its stdin, replies on its stdout.

    Its stderr goes to a temporary file (a pipe nobody drains could fill and stall the
    daemon); when the daemon ends unexpectedly, the tail of that file explains why.
    """

    def __init__(self, proc: subprocess.Popen[bytes], stderr: IO[bytes], grace: float) -> None:
        self.proc = proc
        self._stderr = stderr
        self._grace = grace
        assert proc.stdin is not None and proc.stdout is not None
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()

    @classmethod
    def spawn(cls, repo: str, extra_args: tuple[str, ...] = (), grace: float = 10.0
              ) -> ProcessTransport:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the child; closed by close()
        proc = subprocess.Popen(stdio_command(repo, extra_args), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, env=stdio_env(),
                                bufsize=0, start_new_session=True)
        return cls(proc, stderr, grace)

    def wait_readable(self, timeout: float | None) -> bool:
        readable, _, _ = select.select([self._out], [], [], timeout)
        return bool(readable)

    def read(self) -> bytes:
        try:
            return os.read(self._out, CHUNK)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._in, view)
            view = view[written:]

    def close(self) -> None:
        """Close stdin (the daemon then flushes and exits 0); kill it if it lingers."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(self._grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self._stderr.close()

    def eof_detail(self) -> str:
        try:
            code = self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
            return f" (gatosd exited {code}: {tail})" if tail else f" (gatosd exited {code})"
        return f" (gatosd exited {code})"
