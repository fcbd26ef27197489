"""The fold engine on the in-memory adapter: order, checkpoints, incremental folds,
Proof-of-Fold, time travel, and failures that leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from echo_fold import (
    ENGINE,
    REQUIRED_TRAILERS,
    Folder,
    ProgramError,
    SpecError,
    StateError,
    default_spec,
    parse_spec,
    state_at,
    state_ref,
    verify_checkpoint,
)
from ledger_core import GitObject, ObjectId, encode_commit
from ledger_core.errors import InvalidNamespace
from tests.unit.fold_support import INVOICES, Ledger, event, spec

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = ("table", "totals")


def invoices_ledger() -> Ledger:
    ledger = Ledger()
    actors = ["user:alice", "user:bob", "user:carol"]
    ledger.add("finance", *[event(i * 7, {"id": f"INV-{i}", "amount": 100 + i}, actor=actors[i % 3])
                            for i in range(12)])
    ledger.add("finance", event(500, {"id": "INV-4"}, type="invoice.paid", actor="user:bob"))
    return ledger


# Golden vectors: these events and this program give exactly this state, forever.
GOLDEN_STATE_ROOT = "blake3:2faebf7512862f3e2a0e70ee7ccf4fdcff4feb58b6aa892fcfaad84eb5a911a0"
GOLDEN_DEFAULT_ROOT = "blake3:db4457f4e72a4c58bdb7d95d61c5fefe1d9739353b35c6345559741febad73a9"
GOLDEN_COMMIT = "816bad311f7f40838593de160dc6205483052bbf"


def test_golden_state_root_of_the_invoices_fold() -> None:
    """Fixed events and a fixed program give a fixed State-Root and checkpoint OID."""
    ledger = invoices_ledger()
    result = ledger.folder.fold(spec(INVOICES, channels=CHANNELS))
    assert result.state["totals"] == {"count": 12, "cents": 1266}
    assert result.state["table"]["INV-4"] == {"amount": 104, "paid": True, "by": "user:bob"}
    assert result.state_root == GOLDEN_STATE_ROOT
    assert result.commit == GOLDEN_COMMIT


def test_golden_state_root_of_the_default_fold() -> None:
    result = invoices_ledger().folder.fold(default_spec("finance"))
    assert result.state["summary"]["total"] == 13
    assert result.state["summary"]["by_actor"] == {"user:alice": 4, "user:bob": 5, "user:carol": 4}
    assert result.state_root == GOLDEN_DEFAULT_ROOT


@pytest.mark.parametrize("packed", [True, False])
def test_golden_roots_whether_event_ids_reach_lua_packed_or_one_by_one(
        packed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from echo_fold import _engine

    monkeypatch.setattr(_engine, "PACK_IDS", packed)
    assert invoices_ledger().folder.fold(spec(INVOICES, channels=CHANNELS)).state_root == GOLDEN_STATE_ROOT
    assert invoices_ledger().folder.fold(default_spec("finance")).state_root == GOLDEN_DEFAULT_ROOT
    every = spec(b"""
function step(s, ev)
  s.main[#s.main + 1] = {ev.type, ev.ulid, ev.cid, ev.actor, ev.seq, ev.commit, ev.policy_root,
                         ev.ts or "-", tostring(ev.caps), type(ev.payload), rng().next()}
end
""")
    result = invoices_ledger().folder.fold(every, write=False)
    monkeypatch.setattr(_engine, "PACK_IDS", not packed)
    assert invoices_ledger().folder.fold(every, write=False).state_root == result.state_root
    assert len(result.state["main"]) == 13 and len(result.state["main"][0][2]) == 59


SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.unit.test_fold_engine import invoices_ledger, CHANNELS
from tests.unit.fold_support import INVOICES, spec
r = invoices_ledger().folder.fold(spec(INVOICES, channels=CHANNELS))
print(r.state_root, r.commit)
"""


def test_the_same_fold_in_processes_with_different_hash_seeds() -> None:
    """PYTHONHASHSEED (and Lua's own string hash seed) never reach the state."""
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT))], env=env,
                              capture_output=True, text=True, check=True)
        outputs.add(proc.stdout.strip())
    assert len(outputs) == 1


def test_order_does_not_depend_on_which_journal_arrived_first() -> None:
    """Appending the same journals in another order gives the same state and checkpoint."""
    events = {a: [event(i * 3 + k, {"id": f"{a}-{i}", "amount": i}, actor=a) for i in range(5)]
              for k, a in enumerate(["user:alice", "user:bob", "user:carol"])}
    roots = set()
    for arrival in (["user:alice", "user:bob", "user:carol"], ["user:carol", "user:alice", "user:bob"]):
        ledger = Ledger()
        for actor in arrival:
            ledger.add("finance", *events[actor])
        result = ledger.folder.fold(spec(INVOICES, channels=CHANNELS))
        roots.add((result.state_root, result.commit))
    assert len(roots) == 1


def test_order_interleaves_journals_by_ulid_and_keeps_each_journal_in_order() -> None:
    program = "function step(s, e) s.main[#s.main + 1] = e.payload.n end"
    ledger = Ledger()
    ledger.add("finance", event(30, {"n": 1}, actor="user:alice"), event(10, {"n": 2}, actor="user:alice"))
    ledger.add("finance", event(20, {"n": 3}, actor="user:bob"), event(40, {"n": 4}, actor="user:bob"))
    # alice's second event has a smaller ULID than her first: her chain order still wins.
    assert ledger.folder.fold(spec(program)).state["main"] == [3, 1, 2, 4]


def test_incremental_fold_equals_fold_from_scratch() -> None:
    """Folding in three steps gives the state one fold over everything gives."""
    s = spec(INVOICES, channels=CHANNELS)
    ledger = Ledger()
    for step in range(3):
        ledger.add("finance", *[event(step * 100 + i, {"id": f"I{step}-{i}", "amount": i},
                                      actor=("user:alice", "user:bob")[i % 2]) for i in range(6)])
        result = ledger.folder.fold(s)
        assert result.incremental == (step > 0)
        assert result.new_events == 6
    scratch = ledger.folder.fold(s, incremental=False, write=False)
    assert scratch.state_root == result.state_root
    assert scratch.events == result.events == 18


def test_a_late_event_that_sorts_earlier_forces_a_fold_from_scratch() -> None:
    s = spec("function step(s, e) s.main[#s.main + 1] = e.payload.n end")
    ledger = Ledger()
    ledger.add("finance", event(50, {"n": 1}, actor="user:alice"))
    ledger.folder.fold(s)
    ledger.add("finance", event(10, {"n": 0}, actor="user:bob"))  # fetched later, older ULID
    result = ledger.folder.fold(s)
    assert not result.incremental
    assert result.state["main"] == [0, 1]


def test_folding_twice_without_new_events_writes_nothing() -> None:
    ledger = invoices_ledger()
    s = spec(INVOICES, channels=CHANNELS)
    first = ledger.folder.fold(s)
    before = ledger.snapshot()
    again = ledger.folder.fold(s)
    assert (again.commit, again.written, again.state_root) == (first.commit, False, first.state_root)
    assert ledger.snapshot() == before


def test_checkpoint_carries_every_trailer_and_its_program() -> None:
    ledger = invoices_ledger()
    s = spec(INVOICES, channels=CHANNELS)
    ledger.folder.fold(s)
    cp = ledger.folder.latest("finance")
    assert cp is not None
    assert all(name in cp.trailers for name in REQUIRED_TRAILERS)
    assert cp.first("Fold-Engine") == ENGINE
    assert len(cp.trailers["Ledger-Head"]) == 3
    assert cp.tree["fold/program.lua"] == INVOICES.encode()
    assert set(cp.tree) == {"state/finance.json", "state/finance/totals.json", "fold/spec.json",
                            "fold/program.lua", "fold/window.json"}
    assert cp.tree["state/finance/totals.json"] == b'{"cents":1266,"count":12}'


@pytest.mark.parametrize("program", [
    "function step(s, e) s.main.x = 0.5 end",
    "function step(s, e) while true do end end",
    "function step(s, e) s.main.t = os.time() end",
    "function step(s, e) if e.seq == 13 then error('late failure') end end",
])
def test_a_failing_fold_writes_nothing(program: str) -> None:
    """Refs and objects are exactly as before a fold that fails, even after a good checkpoint."""
    ledger = invoices_ledger()
    ledger.folder.fold(default_spec("finance"))
    before = ledger.snapshot()
    with pytest.raises((ProgramError, StateError)):
        ledger.folder.fold(spec(program, extra="limits: {fuel: 100000}\n"))
    assert ledger.snapshot() == before


def test_the_error_names_the_event_that_failed() -> None:
    ledger = invoices_ledger()
    with pytest.raises(ProgramError, match=r"at event 13 \(ulid "):
        ledger.folder.fold(spec("function step(s, e) if e.seq == 13 then error('no') end end"))


def test_event_filter_delivers_only_listed_types() -> None:
    ledger = invoices_ledger()
    s = spec("function step(s, e) s.main[e.type] = (s.main[e.type] or 0) + 1 end",
             events=["invoice.paid"])
    assert ledger.folder.fold(s).state == {"main": {"invoice.paid": 1}}


def test_rng_streams_come_from_the_inputs_and_survive_incremental_folds() -> None:
    program = "function step(s, e) s.main[#s.main + 1] = rng().below(1000000) end"
    s = spec(program)
    one, two = Ledger(), Ledger()
    events = [event(i, {"n": i}) for i in range(6)]
    one.add("finance", *events)
    full = one.folder.fold(s)
    two.add("finance", *events[:3])
    two.folder.fold(s)
    two.add("finance", *events[3:])
    assert two.folder.fold(s).state == full.state
    assert len(set(full.state["main"])) == 6


def test_verify_accepts_a_good_checkpoint_in_both_modes() -> None:
    ledger = invoices_ledger()
    s = spec(INVOICES, channels=CHANNELS)
    ledger.folder.fold(s)
    ledger.add("finance", event(900, {"id": "X", "amount": 1}))
    ledger.folder.fold(s)
    for mode in ("scratch", "base"):
        report = verify_checkpoint(ledger.folder, "finance", window=mode)
        assert report.ok, report.problems
        assert report.replayed_state_root == report.claimed_state_root


def forge(ledger: Ledger, message_edit: object) -> ObjectId:
    """A copy of the tip checkpoint with its message changed, put on the state ref."""
    tip = ledger.refs.get(state_ref("finance"))
    assert tip
    commit = ledger.objects.read_commit(tip)
    forged = GitObject("commit", encode_commit(commit.tree, commit.parents, commit.author,
                                               commit.committer, message_edit(commit.message)))
    ledger.objects.write_many([forged])
    ledger.refs.compare_and_swap(state_ref("finance"), tip, forged.oid)
    return forged.oid


def test_verify_reports_a_state_root_that_differs() -> None:
    ledger = invoices_ledger()
    result = ledger.folder.fold(spec(INVOICES, channels=CHANNELS))
    forge(ledger, lambda m: m.replace(result.state_root, "blake3:" + "0" * 64))
    report = verify_checkpoint(ledger.folder, "finance")
    assert not report.ok
    assert any("State-Root differs" in p for p in report.problems)


def test_verify_reports_a_missing_trailer() -> None:
    ledger = invoices_ledger()
    ledger.folder.fold(spec(INVOICES, channels=CHANNELS))
    forge(ledger, lambda m: "\n".join(line for line in m.split("\n") if not line.startswith("Fold-Root")))
    report = verify_checkpoint(ledger.folder, "finance")
    assert not report.ok and report.problems == ["trailer Fold-Root is missing"]


def test_time_travel_matches_a_fold_up_to_that_event() -> None:
    s = spec(INVOICES, channels=CHANNELS)
    ledger = Ledger()
    events = [event(i, {"id": f"I{i}", "amount": i}, actor=("user:alice", "user:bob")[i % 2])
              for i in range(10)]
    ledger.add("finance", *events[:6])
    ledger.folder.fold(s)  # a checkpoint after 6 events
    ledger.add("finance", *events[6:])
    ledger.folder.fold(s)
    at = state_at(ledger.folder, s, events[7].event.ulid)
    assert at.events == 8 and at.replayed == 2 and at.base is not None
    assert at.state["totals"] == {"count": 8, "cents": sum(range(8))}
    early = state_at(ledger.folder, s, events[2].cid)
    assert early.base is None and early.state["totals"]["count"] == 3
    truth = Ledger()
    truth.add("finance", *events[:3])
    assert truth.folder.fold(s).state_root == early.state_root


def test_spec_errors_name_the_problem() -> None:
    def parse(text: str) -> None:
        parse_spec(text, read_program=lambda _n: b"function step() end")

    with pytest.raises(SpecError, match="unknown key"):
        parse("fold_id: a\nversion: 1\nns: finance\nprogram: p.lua\nchanels: [x]\n")
    with pytest.raises(SpecError, match="duplicate key"):
        parse("fold_id: a\nversion: 1\nversion: 2\nns: finance\nprogram: p.lua\n")
    with pytest.raises(SpecError, match="missing key"):
        parse("fold_id: a\nns: finance\nprogram: p.lua\n")
    with pytest.raises(SpecError, match="version"):
        parse("fold_id: a\nversion: 1.5\nns: finance\nprogram: p.lua\n")
    with pytest.raises(SpecError, match="namespace"):
        parse("fold_id: a\nversion: 1\nns: ../x\nprogram: p.lua\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        parse("fold_id: [\n")


def test_a_bad_namespace_is_refused_before_anything() -> None:
    with pytest.raises(InvalidNamespace):
        default_spec("a/b")
    with pytest.raises(InvalidNamespace):
        Folder(Ledger().objects, Ledger().refs).journals("..")
