"""The cache plane over a `Node`: the store with the fast commit reader, queries, the KV view."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from gatosd.node import Node
from kv_cache import (
    DEFAULT_ID,
    CacheStore,
    Index,
    InvalidQuery,
    KVView,
    Query,
    UpdateResult,
    load_specs,
    match,
    port_reader,
)
from kv_cache._headers import Columns, walk_columns, walk_columns_native
from ledger_core import read_entry, validate_namespace

Progress = Callable[[int, int], None]


def _walk_child(repo_path: str, head: str) -> Columns:
    """One whole journal walked in a child process (columns travel back cheaply)."""
    return walk_columns(_cache_store(Node.open(repo_path)).read_commit, head)


def parallel_walker(repo_path: str, serial: Callable[[list[str]], list[Columns]]
                    ) -> Callable[[list[str]], list[Columns]]:
    """Walk whole journals in worker processes (one per core) when there are several.

    Inflating commits is most of a full build; journals are independent chains, so
    they walk in parallel.
    """
    def walk(heads: list[str]) -> list[Columns]:
        cpus = os.cpu_count() or 1
        if len(heads) < 2 or cpus < 2:
            return serial(heads)
        context = multiprocessing.get_context("spawn")  # never fork a threaded daemon
        with ProcessPoolExecutor(max_workers=min(cpus, len(heads)), mp_context=context) as pool:
            return [Columns(*cols) for cols in pool.map(_walk_child, [repo_path] * len(heads), heads)]
    return walk


def cache_store(node: Node, *, parallel: bool = False) -> CacheStore:
    """The cache store; commits are read straight from the mapped packs when possible
    (the fold's verified pack reader), else through the object store port. Full builds
    walk journals in native threads when `gatos_native` is built; else, with `parallel`,
    in worker processes."""
    store = _cache_store(node)
    if parallel and not getattr(store, "native_walk", False):
        store.walk_many = parallel_walker(node_path(node), store.walk_many)
    return store


def node_path(node: Node) -> str:
    return node.repo.repo.workdir or node.repo.git_dir


def _cache_store(node: Node) -> CacheStore:
    port = port_reader(node.repo.objects)
    try:
        from echo_fold._native import native_merge_keys, open_native
        from echo_fold._packs import open_reader
        packs = open_reader(node.repo.objects)
    except ImportError:
        packs = None
    if packs is None:
        return CacheStore(node.repo.objects, node.repo.refs, read_commit=port)

    def read(oid: str) -> bytes:
        data = packs.commit(bytes.fromhex(oid))
        return data if data is not None else port(oid)

    store = CacheStore(node.repo.objects, node.repo.refs, read_commit=read)
    native = open_native(node.repo.objects)
    if native is not None:
        def walk_native(heads: list[str]) -> list[Columns]:
            return walk_columns_native(native, read, heads)

        store.walk_many = walk_native
        store.merge_keys = native_merge_keys()
        store.native_walk = True  # type: ignore[attr-defined]
    return store


def workdir(node: Node) -> str:
    return (node.repo.repo.workdir or node.repo.git_dir).rstrip("/")


def specs_for(node: Node, ns: str) -> dict[str, Any]:
    return load_specs(workdir(node), validate_namespace(ns))


def choose_index(node: Node, ns: str, query: Query, index_id: str | None) -> Any:
    """The index to answer with: the one named, else the first (by id) holding every `--where` field."""
    specs = specs_for(node, ns)
    if index_id is not None:
        if index_id not in specs:
            raise InvalidQuery(f"no index {index_id!r} for {ns} (have {', '.join(sorted(specs))})")
        return specs[index_id]
    if not query.fields:
        return specs[DEFAULT_ID]
    for spec_id in sorted(specs):
        if query.fields <= set(specs[spec_id].fields):
            return specs[spec_id]
    raise InvalidQuery(f"no index of {ns} has the field(s) {', '.join(sorted(query.fields))}: add them to "
                       "a spec in gatos/indexes/<id>.yaml")


def rebuild(node: Node, ns: str, index_id: str | None = None, *, full: bool = True,
            progress: Progress | None = None) -> list[UpdateResult]:
    store = cache_store(node, parallel=True)
    specs = specs_for(node, ns)
    chosen = [specs[index_id]] if index_id else [specs[k] for k in sorted(specs)]
    if index_id and index_id not in specs:
        raise InvalidQuery(f"no index {index_id!r} for {ns} (have {', '.join(sorted(specs))})")
    walk = store.walk_many
    walked: dict[tuple[str, ...], list[Columns]] = {}

    def walk_once(heads: list[str]) -> list[Columns]:
        """Several indexes of one namespace rebuilt together walk the journals once."""
        key = tuple(heads)
        if key not in walked:
            walked[key] = walk(heads)
        return walked[key]

    store.walk_many = walk_once
    return [store.update(spec, full=full, progress=progress) for spec in chosen]


def run_query(node: Node, ns: str, query: Query, *, index_id: str | None = None, limit: int | None = None,
              count_only: bool = False, loaded: dict[str, tuple[str, Index]] | None = None
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, events) for a query; the index is brought up to date first (lazily).

    `loaded` (ref → (commit, Index)) lets a long-lived caller keep indexes in memory.
    """
    spec = choose_index(node, ns, query, index_id)
    store = cache_store(node)
    update = store.update(spec)
    cached = loaded.get(spec.ref) if loaded is not None else None
    if cached is not None and cached[0] == update.commit:
        index = cached[1]
    else:
        index = store.load(spec)
        assert index is not None
        if loaded is not None and update.commit is not None:
            loaded[spec.ref] = (update.commit, index)
    positions = match(index, query)
    summary = {"ns": ns, "index": spec.index_id, "matches": len(positions), "update": update.mode,
               "indexed": index.count}
    if count_only:
        return summary, []
    events = []
    for position in positions:
        if limit is not None and len(events) >= limit:
            break
        entry = read_entry(node.repo.objects, index.commit_at(position))
        events.append({"position": position, **entry.to_dict()})
    return summary, events


def state_key(node: Node, ns: str, key: str) -> dict[str, Any]:
    found, value, state_commit = KVView(node.repo.objects, node.repo.refs).get(validate_namespace(ns), key)
    return {"ns": ns, "key": key, "found": found, "value": value, "state_commit": state_commit}


__all__ = ["DEFAULT_ID", "cache_store", "choose_index", "rebuild", "run_query", "specs_for", "state_key"]
