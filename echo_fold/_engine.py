"""The fold engine: journals → ordered events → sandboxed program → checkpoint.

`Folder` works only through the ledger ports, so the same code runs on the
in-memory adapter in unit tests and on a Git repository in the node.

* `fold` continues from the newest checkpoint of the same fold (same spec bytes,
  same engine) when the new events extend its order (`_order.extends`), and folds
  from scratch otherwise; both give the same state for the same journal heads.
* Nothing is written unless the whole fold succeeded: a failing program, a float in
  the state or an exhausted limit leaves refs and objects as they were.
* The checkpoint ref moves by compare-and-swap from the tip the fold started on.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import blake3

from echo_fold._checkpoint import (
    ENGINE,
    Checkpoint,
    Window,
    build_checkpoint,
    ledger_heads,
    policy_code_root,
    state_ref,
    state_root,
)
from echo_fold._native import native_merge
from echo_fold._numeric import rng_seed
from echo_fold._order import Header, extends, max_key, merge
from echo_fold._sandbox import Sandbox
from echo_fold._source import EventReader, NotAncestor, decode_event, journal_heads
from echo_fold._spec import FoldSpec
from echo_fold.errors import FoldError, ProgramError
from ledger_core import (
    JOURNAL_PREFIX,
    ZERO_OID,
    ObjectId,
    ObjectStore,
    RefStore,
    parse_json,
    parse_trailer_lines,
    validate_namespace,
)
from ledger_core.errors import Conflict, LedgerError, NotFound, RefConflict

BATCH = 4096
PACK_IDS = True  # send ulid, cid, commit packed in one string per batch (tests turn it off)
BASE_SEARCH = 256
POLICY_ACTIVE_REF = "refs/gatos/policies/active"
Progress = Callable[[int, int], None]


@dataclass
class Computed:
    """A fold result before it is written."""

    state: dict[str, Any]
    window: Window
    policy_root: str
    new_events: int
    base: Checkpoint | None


@dataclass
class FoldResult:
    ns: str
    commit: ObjectId
    state_root: str
    events: int
    new_events: int
    incremental: bool
    written: bool
    state: dict[str, Any] = field(repr=False)
    spec: FoldSpec = field(repr=False)

    def to_dict(self, channel: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ns": self.ns, "commit": self.commit, "state_root": self.state_root,
            "fold_id": self.spec.fold_id, "fold_version": self.spec.version,
            "fold_root": self.spec.fold_root, "events": self.events,
            "new_events": self.new_events, "incremental": self.incremental,
            "written": self.written, "channels": list(self.spec.channels),
        }
        if channel is not None:
            out["channel"] = channel
            out["value"] = self.state[channel]
        return out


class Folder:
    """Folds the journals of a node's namespaces into checkpoints."""

    def __init__(self, objects: ObjectStore, refs: RefStore,
                 gate: Callable[[str], None] | None = None) -> None:
        self.objects = objects
        self.refs = refs
        # Decides `state:<ns>:checkpoint` before a checkpoint is written; raises to refuse.
        # Injected by the node (the policy plane), so the fold engine never imports it.
        self.gate = gate

    # -- reading checkpoints -----------------------------------------------------------

    def journals(self, ns: str) -> dict[str, ObjectId]:
        return dict(self.refs.list(JOURNAL_PREFIX + validate_namespace(ns) + "/"))

    def read_checkpoint(self, oid: ObjectId) -> Checkpoint:
        """A checkpoint commit with its trailers and every file of its tree."""
        commit = self.objects.read_commit(oid)
        files: dict[str, bytes] = {}
        self._flatten(commit.tree, "", files)
        return Checkpoint(oid, commit.parents[0] if commit.parents else None,
                          parse_trailer_lines(commit.message), files)

    def _flatten(self, tree: ObjectId, prefix: str, out: dict[str, bytes]) -> None:
        for entry in self.objects.read_tree(tree):
            path = prefix + entry.name
            if entry.mode == "40000":
                self._flatten(entry.oid, path + "/", out)
            else:
                out[path] = self.objects.read_blob(entry.oid)

    def latest(self, ns: str) -> Checkpoint | None:
        tip = self.refs.get(state_ref(ns))
        return self.read_checkpoint(tip) if tip else None

    @staticmethod
    def stored_state(cp: Checkpoint, ns: str, channels: tuple[str, ...]) -> dict[str, Any]:
        """`{channel: value}` from a checkpoint's files (raises `FoldError` if one is missing)."""
        state: dict[str, Any] = {}
        for i, channel in enumerate(channels):
            path = f"state/{ns}.json" if i == 0 else f"state/{ns}/{channel}.json"
            if path not in cp.tree:
                raise FoldError(f"checkpoint {cp.commit} has no {path}")
            state[channel] = parse_json(cp.tree[path], path)
        return state

    def _compatible(self, cp: Checkpoint, spec: FoldSpec) -> bool:
        return (cp.first("Fold-Engine") == ENGINE and cp.first("Fold-Root") == spec.fold_root
                and cp.tree.get("fold/spec.json") == spec.canonical())

    def find_base(self, tip: ObjectId | None, spec: FoldSpec) -> Checkpoint | None:
        """The newest checkpoint of this exact fold on the state ref, if its stored state is intact."""
        oid = tip
        for _ in range(BASE_SEARCH):
            if oid is None:
                return None
            cp = self.read_checkpoint(oid)
            if self._compatible(cp, spec):
                try:
                    state = self.stored_state(cp, spec.ns, spec.channels)
                except (FoldError, LedgerError):
                    return None
                return cp if state_root(state) == cp.first("State-Root") else None
            oid = cp.parent
        return None

    # -- folding ----------------------------------------------------------------------

    def compute(self, spec: FoldSpec, heads: dict[str, ObjectId], base: Checkpoint | None = None,
                *, progress: Progress | None = None, until: ObjectId | None = None,
                require_extends: bool = True) -> Computed:
        """Fold the journals ending at `heads`, from `base` (a checkpoint) or from scratch.

        `until` stops after that journal commit (time travel). With a base whose order
        the new events do not extend, raises `NotAncestor` (callers fold from scratch).

        Raises:
            ProgramError (and subclasses): the program failed; nothing is returned.
            NotAncestor: `base` does not lie on these journals.
            CorruptObject, NotFound: the journals cannot be read.
        """
        journal_heads(self.objects, heads)
        window0 = Window.from_value(parse_json(base.tree["fold/window.json"])) if base else None
        if window0 is not None:
            gone = set(window0.heads) - set(heads)
            if gone:
                raise NotAncestor(f"journal(s) {sorted(gone)} of the base checkpoint are gone")
        refs = sorted(heads)
        with EventReader.open(self.objects) as reader:
            tails = reader.walk_many([(heads[ref], window0.heads.get(ref) if window0 else None)
                                      for ref in refs])
            return self._order_and_run(spec, heads, refs, tails, base, window0, progress, until,
                                       require_extends, reader)

    def _order_and_run(self, spec: FoldSpec, heads: dict[str, ObjectId], refs: list[str],
                       tails: list[list[Header]], base: Checkpoint | None, window0: Window | None,
                       progress: Progress | None, until: ObjectId | None, require_extends: bool,
                       reader: EventReader) -> Computed:
        if window0 is not None and require_extends and not extends(window0.max_key, tails):
            raise NotAncestor("new events sort before events already folded")
        order = native_merge(tails) if reader.native is not None else merge(tails)
        if until is not None:
            cut = next((i for i, h in enumerate(order) if h.commit == until), None)
            if cut is None:
                raise NotFound(f"event commit {until} is not in the window")
            order = order[:cut + 1]
            included = {h.journal: h.commit for h in order}
            heads = {ref: included[j] for j, ref in enumerate(refs) if j in included}
            if window0 is not None:
                heads = {**window0.heads, **heads}
        return self._run(spec, heads, order, base, window0, progress, reader)

    def _run(self, spec: FoldSpec, heads: dict[str, ObjectId], order: list[Header],
             base: Checkpoint | None, window0: Window | None, progress: Progress | None,
             reader: EventReader) -> Computed:
        fold_root = spec.fold_root_bytes
        inputs_root = bytes.fromhex(window0.inputs_root[7:]) if window0 else bytes(32)
        # The segment being folded: its first event's global index is `batch_base + 1`;
        # `seed_for` derives an event's pcg32 stream from its inputs root and policy root.
        current = Segment([], "flat", [], b"", [], None, 0, inputs_root)
        batch_base = window0.events if window0 else 0

        def seed_for(index: int) -> tuple[int, int]:
            k = index - batch_base - 1
            return rng_seed(current.roots[32 * k:32 * k + 32], current.policies[k], fold_root)

        sandbox = Sandbox(spec.program, spec.program_name, spec.channels, seed_for,
                          fuel=spec.fuel, memory=spec.memory)
        if base is not None:
            sandbox.restore(self.stored_state(base, spec.ns, spec.channels))
        policy_root = base.first("Policy-Root") or ZERO_OID if base else ZERO_OID
        segments = _segments(order, spec.accepts, reader, inputs_root)
        if reader.native is not None:
            segments = _prefetch(segments)
        try:
            for current in segments:
                count = len(current.headers)
                try:
                    if current.kind == "lua":
                        sandbox.run_chunk(current.data, count, batch_base, current.packed or "")
                    else:
                        sandbox.run_flat(current.data, count, batch_base, current.packed)
                except ProgramError as exc:
                    at = sandbox.failed_at() - batch_base - 1
                    if 0 <= at < count:
                        h = current.headers[at]
                        exc.reason = f"{exc.reason} at event {batch_base + at + 1} (ulid {h.ulid}, cid {h.cid})"
                        exc.args = (exc.reason,)
                    raise
                except OverflowError:  # lupa: a Python int that no Lua integer holds
                    at, value = _first_wide_int(current)
                    h = current.headers[at]
                    raise ProgramError(
                        f"{spec.program_name}: event {batch_base + at + 1} (ulid {h.ulid}, cid {h.cid}) "
                        f"holds the integer {value}, outside the signed 64-bit range of fold values"
                    ) from None
                batch_base += count
                inputs_root = current.inputs_root
                if current.policies:
                    policy_root = current.policies[-1]
                if progress is not None:
                    progress(current.done, len(order))
        finally:
            close = getattr(segments, "close", None)
            if close is not None:
                close()
        seq = batch_base
        state = sandbox.encode()
        time = order[-1].time if order else (window0.time if window0 else 0)
        window = Window(dict(sorted(heads.items())), base.commit if base else None, seq,
                        max_key(window0.max_key if window0 else None, order),
                        "blake3:" + inputs_root.hex(), time)
        return Computed(state, window, policy_root, seq - (window0.events if window0 else 0), base)

    def fold(self, spec: FoldSpec, *, progress: Progress | None = None, write: bool = True,
             incremental: bool = True, tries: int = 3) -> FoldResult:
        """Fold `spec.ns` up to its current journal heads and record a checkpoint.

        Raises:
            ProgramError (and subclasses), SpecError: nothing was written.
            Conflict: the state ref kept moving under us for `tries` attempts.
        """
        ref = state_ref(spec.ns)
        if write and self.gate is not None:
            self.gate(spec.ns)
        for _ in range(tries):
            tip = self.refs.get(ref)
            heads = self.journals(spec.ns)
            base = self.find_base(tip, spec) if incremental else None
            computed = None
            if base is not None:
                window0 = Window.from_value(parse_json(base.tree["fold/window.json"]))
                if base.commit == tip and window0.heads == heads:
                    state = self.stored_state(base, spec.ns, spec.channels)
                    return FoldResult(spec.ns, tip, base.first("State-Root") or "", window0.events, 0,
                                      True, False, state, spec)
                try:
                    computed = self.compute(spec, heads, base, progress=progress)
                except NotAncestor:
                    computed = None
            if computed is None:
                computed = self.compute(spec, heads, None, progress=progress)
            objects, oid, root = self._build(spec, computed, tip)
            if not write:
                return self._result(spec, oid, root, computed, written=False)
            self.objects.write_many(objects)
            try:
                self.refs.compare_and_swap(ref, tip, oid)
            except RefConflict:
                continue
            return self._result(spec, oid, root, computed, written=True)
        raise Conflict(f"{ref} kept moving while folding; gave up after {tries} tries")

    def _build(self, spec: FoldSpec, computed: Computed, parent: ObjectId | None
               ) -> tuple[list[Any], ObjectId, str]:
        return build_checkpoint(spec.ns, spec, computed.state, computed.window, computed.policy_root,
                                self._code_root(computed.policy_root), parent)

    def _code_root(self, policy_root: str) -> str:
        tree: bytes | None = None
        if policy_root != ZERO_OID:
            try:
                commit = self.objects.read_commit(ObjectId(policy_root))
                tree = self.objects.read(commit.tree).data
            except LedgerError:
                tree = None
        return policy_code_root(policy_root, tree)

    @staticmethod
    def _result(spec: FoldSpec, oid: ObjectId, root: str, computed: Computed, *, written: bool
                ) -> FoldResult:
        return FoldResult(spec.ns, oid, root, computed.window.events, computed.new_events,
                          computed.base is not None, written, computed.state, spec)



@dataclass
class Segment:
    """Consecutive events ready for the sandbox, with what `seed_for` needs of them.

    `kind` "lua": `data` is a Lua text chunk of type, actor, policy_root, payload, ts and
    caps per event (native reader) and `packed` holds ulid ‖ cid ‖ commit of each.
    `kind` "flat": `data` is the same sextets as Python objects with `packed`, or nonets
    (with ulid, cid and commit) when `packed` is None. `done` is how far into the order
    the fold is once these are folded; `inputs_root` is the root after the last one.
    """

    headers: list[Header]
    kind: str
    data: Any
    roots: bytes
    policies: list[str]
    packed: str | None
    done: int
    inputs_root: bytes


class _Gathered:
    """Events read by the Python path, gathered into one "flat" segment."""

    def __init__(self) -> None:
        self.headers: list[Header] = []
        self.flat: list[Any] = []
        self.ids: list[str] = []
        self.roots = bytearray()
        self.policies: list[str] = []
        self.fixed = True  # every ulid, cid and commit of its usual length

    def add(self, header: Header, envelope: dict[str, Any], root: bytes) -> None:
        policy = envelope.get("policy_root", ZERO_OID)
        self.roots += root
        self.policies.append(policy)
        self.headers.append(header)
        self.flat += (sys.intern(header.type), sys.intern(envelope.get("actor", "")), policy,
                      envelope.get("payload"), envelope.get("ts"), envelope.get("caps"))
        self.ids.append(header.ulid + header.cid + header.commit)
        if self.fixed and (len(header.ulid) != 26 or len(header.cid) != 59 or len(header.commit) != 40):
            self.fixed = False

    def segment(self, done: int, inputs_root: bytes) -> Segment:
        packed = "".join(self.ids) if self.fixed and PACK_IDS else None
        roots = bytes(self.roots)
        if packed is not None and packed.isascii():
            return Segment(self.headers, "flat", self.flat, roots, self.policies, packed, done, inputs_root)
        nonets: list[Any] = []
        for i, h in enumerate(self.headers):
            f = self.flat[6 * i:6 * i + 6]
            nonets += (f[0], h.ulid, h.cid, f[1], h.commit, f[2], f[3], f[4], f[5])
        return Segment(self.headers, "flat", nonets, roots, self.policies, None, done, inputs_root)


def _segments(order: list[Header], accepts: Callable[[str], bool], reader: EventReader,
              inputs_root: bytes) -> Iterator[Segment]:
    """The accepted events of `order` read and checked, in segments of at most `BATCH`.

    With the native reader, each batch is read natively (as Lua text) up to the first
    event it leaves to Python; such events are read here, one by one, as the pure path
    reads every event. Deterministic: the segments depend only on the events.
    """
    read_blob = reader.blob
    digest = blake3.blake3
    stage = reader.native.stage_lua if reader.native is not None else None
    total = len(order)
    done = 0
    while done < total:
        chunk: list[Header] = []
        while done < total and len(chunk) < BATCH:
            header = order[done]
            done += 1
            if accepts(header.type):
                chunk.append(header)
        k = 0
        gathered = _Gathered()
        while k < len(chunk):
            if stage is not None:
                n, text, batch_roots, batch_policies, packed_ids, root = stage(chunk, k, inputs_root)
                if n:
                    if gathered.headers:
                        yield gathered.segment(done, inputs_root)
                        gathered = _Gathered()
                    inputs_root = root
                    yield Segment(chunk[k:k + n], "lua", text, batch_roots, batch_policies, packed_ids,
                                  done, inputs_root)
                    k += n
                    continue
            header = chunk[k]
            k += 1
            envelope = decode_event(header, read_blob(header))
            inputs_root = digest(inputs_root + header.cid.encode("ascii")).digest()
            gathered.add(header, envelope, inputs_root)
        if gathered.headers:
            yield gathered.segment(done, inputs_root)


def _wide_int(value: Any) -> int | None:
    """The first integer in `value` outside the signed 64-bit range, if any (map keys are text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**63 else value
    parts = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((found for found in map(_wide_int, parts) if found is not None), None)


def _first_wide_int(segment: Segment) -> tuple[int, int]:
    """The first event of a "flat" segment holding an integer Lua cannot, and that integer."""
    width = 6 if segment.packed is not None else 9
    for i in range(len(segment.headers)):
        found = _wide_int(segment.data[width * i:width * i + width])
        if found is not None:
            return i, found
    raise AssertionError("no integer out of range in the segment")  # pragma: no cover


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def _prefetch(items: Iterator[Segment], depth: int = 2) -> Iterator[Segment]:
    """`items`, produced on a second thread up to `depth` ahead.

    The native reader works without the GIL and Lua runs without it too, so reading the
    next batch overlaps folding this one. Items and errors arrive in the producer's
    order, so a failure surfaces at the same event as without the thread.
    """
    slots: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(_Raised(exc))

    worker = threading.Thread(target=produce, name="fold-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.05)
        worker.join()


def heads_of(cp: Checkpoint) -> dict[str, ObjectId]:
    return ledger_heads(cp.trailers.get("Ledger-Head", []))
