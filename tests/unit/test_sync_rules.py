"""The replication rules on their own: ref kinds, fork refs, trust and log joins, key changes."""

from __future__ import annotations

from pathlib import Path

import orjson
import pygit2
import pytest

from gatosd._hub import read_updates
from gatosd._merge import join_log, join_trust, key_changes
from gatosd._refclass import Kind, classify, fork_ref, forked_ref

HEX = "ab" * 32


@pytest.mark.parametrize(("ref", "kind"), [
    ("refs/gatos/journal/finance/user/alice", Kind.JOURNAL),
    ("refs/gatos/trust", Kind.TRUST),
    ("refs/gatos/audit/policy", Kind.AUDIT),
    ("refs/gatos/audit/proofs/poe/x", Kind.LOG),
    ("refs/gatos/policies/active", Kind.POLICY_ACTIVE),
    ("refs/gatos/policies/" + HEX, Kind.LOG),
    ("refs/gatos/state/finance", Kind.STATE),
    (f"refs/gatos/jobs/{HEX}/claim", Kind.CLAIM),
    (f"refs/gatos/jobs/{HEX}/result", Kind.ONCE),
    (f"refs/gatos/jobs/{HEX}/job", Kind.ONCE),
    ("refs/gatos/jobs/nothex/claim", Kind.LOG),
    ("refs/gatos/cache/finance-default", Kind.LOCAL),
    ("refs/gatos/sessions/user/a/01H", Kind.LOCAL),
    ("refs/gatos/forks/journal/finance/user/alice/" + "1" * 40, Kind.FORK),
    ("refs/gatos/mbus/echo/jobs/-0", Kind.LOG),
    ("refs/heads/main", Kind.LOCAL),
])
def test_classify(ref: str, kind: Kind) -> None:
    assert classify(ref) is kind


def test_fork_ref_round_trip() -> None:
    ref = "refs/gatos/journal/finance/user/alice"
    fork = fork_ref(ref, "1" * 40)
    assert fork == "refs/gatos/forks/journal/finance/user/alice/" + "1" * 40
    assert forked_ref(fork) == (ref, "1" * 40)


def test_read_updates_ignores_malformed_lines() -> None:
    lines = ["0" * 40 + " " + "1" * 40 + " refs/gatos/trust", "", "garbage", "a b c d"]
    updates = read_updates(lines)
    assert [(u.ref, u.old, u.new) for u in updates] == [("refs/gatos/trust", "0" * 40, "1" * 40)]


# -- joins over a real repository ---------------------------------------------------------

def _commit(repo: pygit2.Repository, files: dict[str, bytes], parents: list[str], t: int) -> str:
    index = pygit2.Index()
    for path, data in sorted(files.items()):
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.GIT_FILEMODE_BLOB))
    tree = index.write_tree(repo)
    sig = pygit2.Signature("t", "t@x", t, 0)
    return str(repo.create_commit(None, sig, sig, "m", tree, [pygit2.Oid(hex=p) for p in parents]))


def _actor(name: str, *keys: str) -> tuple[str, bytes]:
    return (f"gatos/trust/actors/user/{name}.json",
            orjson.dumps({"actor": f"user:{name}", "keys": list(keys)}))


@pytest.fixture
def repo(tmp_path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path / "r"), bare=True)


def test_trust_join_is_a_union_and_deterministic(repo: pygit2.Repository) -> None:
    base = dict([_actor("alice", "ed25519:aa")])
    root = _commit(repo, base, [], 10)
    left = _commit(repo, {**base, **dict([_actor("bob", "ed25519:bb")])}, [root], 20)
    right = _commit(repo, {**base, "gatos/trust/grants/g1.json": b"{}"}, [root], 30)
    joined = join_trust(repo, left, right)
    assert joined.oid is not None and not joined.conflicts
    again = join_trust(repo, right, left)
    assert again.oid == joined.oid  # either node makes the same commit
    commit = repo[joined.oid]
    assert sorted(str(p) for p in commit.parent_ids) == sorted((left, right))
    assert commit.commit_time == 30
    paths = {e.name for e in commit.tree["gatos/trust/actors/user"]}  # type: ignore[union-attr]
    assert paths == {"alice.json", "bob.json"}
    assert commit.tree["gatos/trust/grants/g1.json"] is not None
    assert key_changes(repo, left, joined.oid) == []


def test_trust_join_refuses_a_path_changed_differently(repo: pygit2.Repository) -> None:
    root = _commit(repo, dict([_actor("alice", "ed25519:aa")]), [], 10)
    left = _commit(repo, dict([_actor("alice", "ed25519:aa"), _actor("eve", "ed25519:e1")]), [root], 20)
    right = _commit(repo, dict([_actor("alice", "ed25519:aa"), _actor("eve", "ed25519:e2")]), [root], 20)
    joined = join_trust(repo, left, right)
    assert joined.oid is None and "eve.json" in joined.conflicts[0]


def test_key_changes_names_a_replaced_key(repo: pygit2.Repository) -> None:
    old = _commit(repo, dict([_actor("alice", "ed25519:aa")]), [], 10)
    new = _commit(repo, dict([_actor("alice", "ed25519:ff")]), [old], 20)
    grown = _commit(repo, dict([_actor("alice", "ed25519:aa"), _actor("bob", "ed25519:bb")]), [old], 20)
    problems = key_changes(repo, old, new)
    assert len(problems) == 1 and "user:alice" in problems[0]
    assert key_changes(repo, old, grown) == []
    assert key_changes(repo, None, new) == []


def test_log_join_has_no_record_and_two_parents(repo: pygit2.Repository) -> None:
    root = _commit(repo, {"decision.json": b"{}"}, [], 10)
    a = _commit(repo, {"decision.json": b"{\"a\":1}"}, [root], 11)
    b = _commit(repo, {"decision.json": b"{\"b\":1}"}, [root], 12)
    joined = join_log(repo, a, b, "audit: join")
    commit = repo[joined.oid]
    assert len(commit.parent_ids) == 2 and len(commit.tree) == 0
    assert join_log(repo, b, a, "audit: join").oid == joined.oid
