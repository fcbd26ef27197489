"""Proof-of-Fold: re-run a checkpoint's fold and compare what it claims.

A checkpoint proves its state when
1. every trailer of SPEC §6 is present, and `Fold-Engine` is this engine;
2. `fold/program.lua` hashes to `Fold-Root` and `fold/spec.json` matches it;
3. the stored channel files hash (as `{channel: value}`) to `State-Root`;
4. `fold/window.json` names the same journal heads as the `Ledger-Head` trailers;
5. folding the journals up to those heads — from scratch, or with `window="base"`
   from the base checkpoint the window declares — gives the same `State-Root`,
   `Inputs-Root` and event count.

The replay uses only what the checkpoint carries and the journals, never the
working tree, so it can be run years later on any clone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from echo_fold._checkpoint import ENGINE, REQUIRED_TRAILERS, Checkpoint, Window, state_ref, state_root
from echo_fold._engine import Folder, heads_of
from echo_fold._spec import spec_from_value
from echo_fold.errors import FoldError
from ledger_core import ObjectId, parse_json
from ledger_core.errors import LedgerError, NotFound


@dataclass
class ProofReport:
    ref: str
    commit: ObjectId | None
    ok: bool = True
    claimed_state_root: str | None = None
    replayed_state_root: str | None = None
    mode: str = "scratch"
    events: int | None = None
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "ref": self.ref, "commit": self.commit, "mode": self.mode,
                "claimed_state_root": self.claimed_state_root,
                "replayed_state_root": self.replayed_state_root, "events": self.events,
                "problems": list(self.problems)}


def resolve(folder: Folder, ref: str) -> ObjectId:
    """A checkpoint named as a full ref, a namespace, or a commit id."""
    if len(ref) == 40 and all(c in "0123456789abcdef" for c in ref):
        return ObjectId(ref)
    name = ref if ref.startswith("refs/") else str(state_ref(ref))
    oid = folder.refs.get(name)  # type: ignore[arg-type]
    if oid is None:
        raise NotFound(f"no checkpoint at {name}")
    return oid


def verify_checkpoint(folder: Folder, ref: str, *, window: str = "scratch") -> ProofReport:
    """Re-run the fold a checkpoint claims and report every difference.

    Raises:
        NotFound: `ref` names nothing. Every other failure is a problem in the report.
    """
    oid = resolve(folder, ref)
    report = ProofReport(ref, oid, mode=window)
    try:
        cp = folder.read_checkpoint(oid)
    except LedgerError as exc:
        report.fail(f"cannot read checkpoint {oid}: {exc.reason}")
        return report
    missing = [name for name in REQUIRED_TRAILERS if name not in cp.trailers]
    for name in missing:
        report.fail(f"trailer {name} is missing")
    report.claimed_state_root = cp.first("State-Root")
    if missing:
        return report
    if cp.first("Fold-Engine") != ENGINE:
        report.fail(f"Fold-Engine is {cp.first('Fold-Engine')}, this verifier is {ENGINE}")
    try:
        spec = spec_from_value(parse_json(cp.tree.get("fold/spec.json", b"null"), "fold/spec.json"),
                               cp.tree.get("fold/program.lua", b""))
    except LedgerError as exc:
        report.fail(f"the fold cannot be rebuilt from the checkpoint: {exc.reason}")
        return report
    _check_claims(cp, spec, report)
    try:
        win = Window.from_value(parse_json(cp.tree["fold/window.json"], "fold/window.json"))
        heads = heads_of(cp)
    except (KeyError, LedgerError) as exc:
        report.fail(f"the window cannot be read: {exc}")
        return report
    if win.heads != heads:
        report.fail("fold/window.json and the Ledger-Head trailers name different journal heads")
    _replay(folder, cp, spec, heads, win, window, report)
    return report


def _check_claims(cp: Checkpoint, spec: Any, report: ProofReport) -> None:
    if cp.first("Fold-Root") != spec.fold_root:
        report.fail(f"Fold-Root is {cp.first('Fold-Root')} but the program hashes to {spec.fold_root}")
    if cp.first("Fold-Id") != spec.fold_id or cp.first("Fold-Version") != str(spec.version):
        report.fail("Fold-Id / Fold-Version disagree with fold/spec.json")
    try:
        stored = Folder.stored_state(cp, spec.ns, spec.channels)
    except LedgerError as exc:
        report.fail(f"stored state cannot be read: {exc.reason}")
        return
    if state_root(stored) != cp.first("State-Root"):
        report.fail(f"the stored state hashes to {state_root(stored)}, not the State-Root "
                    f"{cp.first('State-Root')}")


def _replay(folder: Folder, cp: Checkpoint, spec: Any, heads: dict[str, ObjectId], win: Window,
            window: str, report: ProofReport) -> None:
    base = None
    if window == "base" and win.base is not None:
        try:
            base = folder.read_checkpoint(ObjectId(win.base))
        except LedgerError as exc:
            report.fail(f"base checkpoint {win.base} cannot be read: {exc.reason}")
            return
    try:
        computed = folder.compute(spec, heads, base)
    except (FoldError, LedgerError) as exc:
        report.fail(f"the replay failed: {exc.code}: {exc.reason}")
        return
    report.replayed_state_root = state_root(computed.state)
    report.events = computed.window.events
    if report.replayed_state_root != cp.first("State-Root"):
        report.fail(f"State-Root differs: the checkpoint claims {cp.first('State-Root')}, "
                    f"the replay gives {report.replayed_state_root}")
    if computed.window.inputs_root != cp.first("Inputs-Root"):
        report.fail(f"Inputs-Root differs: claimed {cp.first('Inputs-Root')}, "
                    f"replayed {computed.window.inputs_root}")
    if str(computed.window.events) != cp.first("Fold-Events"):
        report.fail(f"Fold-Events differs: claimed {cp.first('Fold-Events')}, "
                    f"replayed {computed.window.events}")
