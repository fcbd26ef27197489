"""The optional native pack reader (`gatos_native`, built from `native/` by scripts/setup.sh).

It reads what `_packs.PackReader` reads (whole objects of the mapped packs, commits
checked against their SHA-1 ids, event bytes against their Event-CID) without the GIL
and in parallel threads, and it answers only what it can answer exactly as the Python
path would: a walk that meets anything unusual (a loose object, a delta, a commit in
another layout) stops there and says where, and a batch of events stops at the first
event it cannot decode the plain way. Python then continues on its own path, so the
results are the same with or without the module, only faster with it.

`GATOS_NATIVE=0` turns it off; `GATOS_REQUIRE_NATIVE=1` makes its absence an error
(the test suite checks that it is there where it was built).
"""

from __future__ import annotations

import os
from typing import Any

try:
    import gatos_native as _module
except ImportError:  # not built on this machine: the pure path does everything
    _module = None

ABI = 4


def available() -> bool:
    """Whether the module is importable, of the version this code speaks, and not turned off."""
    return (_module is not None and getattr(_module, "ABI", None) == ABI
            and os.environ.get("GATOS_NATIVE", "1") != "0")


def open_native(objects: object) -> Any | None:
    """A `gatos_native.Packs` for an object store kept in a Git repository, else None.

    Like `_packs.open_reader`: recognized by an `objects_dir` attribute naming a folder
    with a `pack` folder; `GATOS_FOLD_PACKS=0` turns pack reading off altogether.
    """
    if not available() or os.environ.get("GATOS_FOLD_PACKS", "1") == "0":
        return None
    folder = getattr(objects, "objects_dir", None)
    if not isinstance(folder, str) or not os.path.isdir(os.path.join(folder, "pack")):
        return None
    assert _module is not None
    return _module.Packs(folder)


def native_merge(chains: list[list[Any]]) -> list[Any]:
    """`_order.merge` done natively (the same list; only call it when `available()`)."""
    assert _module is not None
    return _module.merge(chains)  # type: ignore[no-any-return]


def native_merge_keys() -> Any:
    """`gatos_native.merge_keys` (see `kv_cache._headers.merge_columns`), when available."""
    return _module.merge_keys if available() and _module is not None else None
