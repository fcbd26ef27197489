"""The mount and network namespaces of a job, made with system calls in the forked child.

Running `mount(8)` once per mount point cost ~4 ms an exec, ~80 ms a job on this host; the
same setup is a dozen system calls here. Used only when the worker runs as root on a kernel
with `mount_setattr` (5.12+); otherwise `_sandbox` falls back to the shell script.

Runs inside `preexec_fn` (after fork, before exec): it only calls prepared ctypes
functions and `os` primitives, never imports or takes Python-level locks.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
MOUNT_ATTR_RDONLY = 0x1
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added in 5.12)
TMP_DIRS = (b"/tmp", b"/var/tmp", b"/dev/shm")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_RDONLY = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
_WRITABLE = _MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)


def _ok(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    assert _libc is not None
    _ok(_libc.mount(source, target, fstype, ctypes.c_ulong(flags), data), f"mount {target!r}")


def _setattr(dirfd: int, path: bytes, flags: int, attr: _MountAttr) -> None:
    assert _libc is not None
    _ok(_libc.syscall(SYS_MOUNT_SETATTR, dirfd, path, flags, ctypes.byref(attr), ctypes.sizeof(attr)),
        f"mount_setattr {path!r}")


def enter(workspace: str, cwd: str) -> None:
    """New mount + network namespaces: everything read-only but `workspace`, private /tmp.

    Ends with the working directory at `workspace/cwd` *inside* the new mounts (a cwd
    taken before would still point at the read-only original).
    """
    assert _libc is not None
    ws = os.fsencode(workspace)
    _ok(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
    _mount(None, b"/", None, MS_REC | MS_PRIVATE, None)
    _mount(ws, ws, None, MS_BIND | MS_REC, None)
    fd = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _setattr(AT_FDCWD, b"/", AT_RECURSIVE, _RDONLY)
        _setattr(fd, b"", AT_EMPTY_PATH, _WRITABLE)
        for tmp in TMP_DIRS:
            if os.path.isdir(tmp):
                _mount(b"tmpfs", tmp, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64m,mode=1777")
        try:
            visible = os.path.samestat(os.stat(ws), os.fstat(fd))
        except OSError:
            visible = False
        if not visible:  # hidden by a tmpfs above: bind it again from the open descriptor
            os.makedirs(ws, exist_ok=True)
            _mount(b"/proc/self/fd/%d" % fd, ws, None, MS_BIND, None)
    finally:
        os.close(fd)
    os.chdir(os.path.join(workspace, cwd))


def available() -> bool:
    return _libc is not None and os.geteuid() == 0


__all__ = ["available", "enter"]
