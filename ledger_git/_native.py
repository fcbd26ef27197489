"""The optional native module (`gatos_native`, built from `native/` by scripts/setup.sh)
as the Git adapter and the bus writer use it: pack assembly and bus message building.

Everything it does here gives the same bytes as the Python path (tests/integration/
test_native_bus.py); it only saves CPU. `GATOS_NATIVE=0` turns it off, as for the
fold's pack reader (`echo_fold._native`). Both check the module's `ABI`: change them
together with `native/src/lib.rs`.
"""

from __future__ import annotations

import os
from typing import Any

try:
    import gatos_native as _module
except ImportError:  # not built here: the Python path does everything
    _module = None

ABI = 4


def native_module() -> Any | None:
    """The module when it is built, of this ABI, and not turned off; else None."""
    if _module is None or getattr(_module, "ABI", None) != ABI or os.environ.get("GATOS_NATIVE", "1") == "0":
        return None
    return _module


def native_assemble() -> Any | None:
    """`gatos_native.assemble` (entries -> pack, idx, checksum), when available."""
    module = native_module()
    return module.assemble if module is not None else None
