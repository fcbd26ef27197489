"""State plane: deterministic folds (sandboxed Lua 5.4), checkpoints, Proof-of-Fold.

State is never written by hand: `Folder` folds a namespace's journals, in one total
order, through a pure program in a deterministic sandbox, and records the result as
a checkpoint commit on `refs/gatos/state/<ns>` whose trailers let anyone replay it.
See docs/fold.md.
"""

from __future__ import annotations

from echo_fold._checkpoint import (
    ENGINE,
    REQUIRED_TRAILERS,
    STATE_PREFIX,
    Checkpoint,
    Window,
    state_ref,
    state_root,
)
from echo_fold._default_fold import DEFAULT_FOLD_ID, DEFAULT_PROGRAM
from echo_fold._engine import Folder, FoldResult, heads_of
from echo_fold._numeric import Pcg32, q_div, q_from_int, q_mul, q_to_int, rng_seed
from echo_fold._order import Header, merge
from echo_fold._proof import ProofReport, resolve, verify_checkpoint
from echo_fold._sandbox import DEFAULT_FUEL, DEFAULT_MEMORY, Sandbox
from echo_fold._spec import FoldSpec, default_spec, find_spec, load_spec, parse_spec, spec_from_value
from echo_fold._travel import TravelResult, state_at
from echo_fold.errors import (
    FoldError,
    FuelExhausted,
    MemoryExhausted,
    ProgramError,
    ProofMismatch,
    SpecError,
    StateError,
)
from ledger_core import parse_trailer_lines

__all__ = [
    "DEFAULT_FOLD_ID",
    "DEFAULT_FUEL",
    "DEFAULT_MEMORY",
    "DEFAULT_PROGRAM",
    "ENGINE",
    "REQUIRED_TRAILERS",
    "STATE_PREFIX",
    "Checkpoint",
    "FoldError",
    "FoldResult",
    "FoldSpec",
    "Folder",
    "FuelExhausted",
    "Header",
    "MemoryExhausted",
    "Pcg32",
    "ProgramError",
    "ProofMismatch",
    "ProofReport",
    "Sandbox",
    "SpecError",
    "StateError",
    "TravelResult",
    "Window",
    "default_spec",
    "find_spec",
    "heads_of",
    "load_spec",
    "merge",
    "parse_spec",
    "parse_trailer_lines",
    "q_div",
    "q_from_int",
    "q_mul",
    "q_to_int",
    "resolve",
    "rng_seed",
    "spec_from_value",
    "state_at",
    "state_ref",
    "state_root",
    "verify_checkpoint",
]
