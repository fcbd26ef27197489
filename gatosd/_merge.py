"""Joining two diverged histories of a log-like ref without losing either side.

Only two refs are ever joined: `refs/gatos/trust` (add-only documents: keys of new
actors, signed grants and revocations under their content ids) and
`refs/gatos/audit/policy` (one record per commit). The join is a commit with both heads
as parents, so it is a fast-forward from each side and the hub accepts it; its bytes are
a function of the two heads only (parents in id order, the later parent's time, a fixed
identity), so two nodes joining the same pair make the same commit.

Journals are never joined (a fork is kept and reported), and neither is anything the
union cannot decide: a trust file both sides changed differently is a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import pygit2

JOIN_NAME = "gatos-sync"
JOIN_EMAIL = "sync@gatos.invalid"
KEYS_DIR = "gatos/trust/actors/"


@dataclass
class Join:
    oid: str | None
    conflicts: list[str] = field(default_factory=list)


def _flatten(repo: pygit2.Repository, tree: pygit2.Tree | None, prefix: str = "") -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    if tree is None:
        return out
    for entry in tree:
        path = prefix + entry.name
        if entry.filemode == pygit2.GIT_FILEMODE_TREE:
            out.update(_flatten(repo, repo[entry.id], path + "/"))  # type: ignore[arg-type]
        else:
            out[path] = (entry.filemode, str(entry.id))
    return out


def _tree_of(repo: pygit2.Repository, oid: str | None) -> pygit2.Tree | None:
    return repo[oid].peel(pygit2.Tree) if oid else None  # type: ignore[union-attr]


def actor_keys(repo: pygit2.Repository, commit: str | None) -> dict[str, tuple[str, ...]]:
    """path of each actor file of a trust commit → its sorted keys."""
    files = _flatten(repo, _tree_of(repo, commit))
    out = {}
    for path, (_mode, oid) in files.items():
        if path.startswith(KEYS_DIR) and path.endswith(".json"):
            try:
                doc = orjson.loads(repo[oid].data)  # type: ignore[attr-defined]
                out[path] = tuple(sorted(str(k) for k in doc.get("keys", [])))
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                out[path] = ("<unreadable>",)
    return out


def key_changes(repo: pygit2.Repository, old: str | None, new: str) -> list[str]:
    """Why moving the trust graph from `old` to `new` would change a known actor's keys.

    A new actor's first keys are accepted from any node (it holds nothing until an actor
    with `trust:grant` grants it capabilities); replacing or adding a key of an actor the
    graph already knows would let any node speak as that actor, so it is refused.
    """
    before, after = actor_keys(repo, old), actor_keys(repo, new)
    problems = []
    for path, keys in sorted(before.items()):
        now = after.get(path)
        if now != keys:
            who = path[len(KEYS_DIR):-len(".json")].replace("/", ":", 1)
            problems.append(f"the trusted keys of {who} changed ({len(keys)} → {len(now or ())}); "
                            "a known actor's keys are not replaced through replication")
    return problems


def _commit(repo: pygit2.Repository, tree: str, parents: list[str], message: str) -> str:
    seconds = max(repo[p].commit_time for p in parents)  # type: ignore[attr-defined]
    sig = pygit2.Signature(JOIN_NAME, JOIN_EMAIL, seconds, 0)
    ordered = sorted(parents)
    return str(repo.create_commit(None, sig, sig, message, pygit2.Oid(hex=tree),
                                  [pygit2.Oid(hex=p) for p in ordered]))


def _write_tree(repo: pygit2.Repository, files: dict[str, tuple[int, str]]) -> str:
    index = pygit2.Index()
    for path, (mode, oid) in sorted(files.items()):
        index.add(pygit2.IndexEntry(path, pygit2.Oid(hex=oid), mode))
    return str(index.write_tree(repo))


def join_trust(repo: pygit2.Repository, local: str, remote: str) -> Join:
    """The union of two trust histories, or the paths both sides changed differently."""
    base_oid = repo.merge_base(local, remote)
    base = _flatten(repo, _tree_of(repo, str(base_oid) if base_oid else None))
    ours = _flatten(repo, _tree_of(repo, local))
    theirs = _flatten(repo, _tree_of(repo, remote))
    merged: dict[str, tuple[int, str]] = {}
    conflicts = []
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if a == b or b is None:
            chosen = a
        elif a is None or base.get(path) == a:
            chosen = b
        elif base.get(path) == b:
            chosen = a
        else:
            conflicts.append(f"{path} was changed differently on both sides")
            continue
        if chosen is not None:
            merged[path] = chosen
    removed = [p for p in base if p not in merged and (p in ours) != (p in theirs)]
    conflicts.extend(f"{p} was removed on one side" for p in removed)
    if conflicts:
        return Join(None, conflicts)
    tree = _write_tree(repo, merged)
    message = "trust: join\n\nJoined: " + "\nJoined: ".join(sorted((local, remote))) + "\n"
    return Join(_commit(repo, tree, [local, remote], message))


def join_log(repo: pygit2.Repository, local: str, remote: str, subject: str) -> Join:
    """A join commit of two record logs: empty tree, so it is no record itself."""
    empty = str(repo.TreeBuilder().write())
    message = f"{subject}\n\nJoined: " + "\nJoined: ".join(sorted((local, remote))) + "\n"
    return Join(_commit(repo, empty, [local, remote], message))


def join_state(repo: pygit2.Repository, local: str, remote: str) -> Join:
    """Two diverged checkpoints of one namespace → one that descends from both.

    State is derived, so nothing is lost by settling on one side: the join carries the
    remote checkpoint's tree, trailers and identity unchanged (its Proof-of-Fold is the
    remote's), with both heads as parents, so the state ref stays fast-forward on every
    node and at the hub. The next local fold folds on from it.
    """
    theirs = repo[remote]
    ordered = sorted((local, remote))
    return Join(str(repo.create_commit(None, theirs.author, theirs.committer, theirs.message,  # type: ignore[attr-defined]
                                       theirs.tree_id, [pygit2.Oid(hex=p) for p in ordered])))  # type: ignore[attr-defined]


__all__ = ["Join", "actor_keys", "join_log", "join_state", "join_trust", "key_changes"]
