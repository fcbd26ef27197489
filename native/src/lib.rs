//! gatos_native: a native reader of Git packs for GATOS folds and cache builds.
//!
//! Optional: the Python packages work without it and use it when it imports. Every
//! answer here is either exactly what the Python path would compute, or "not here"
//! (a walk that ends early, an event count short of the batch), after which Python
//! continues on its own path. It never raises for bad data: the Python path does.

mod buspack;
mod cbor;
mod envelope;
mod journal;
mod luatext;
mod packs;

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use journal::{hex_to_id, walk, Clock, Row};
use packs::{Hint, Store, BLOB, TREE};

const EVENT_MARKER: &[u8] = b" event.cbor\0";
const ZERO_OID: &str = "0000000000000000000000000000000000000000";
const CID_PREFIX: [u8; 4] = [0x01, 0x71, 0x1e, 0x20];
/// `stage_lua` ends a chunk once its text is this long (at least one event per chunk).
const CHUNK_BYTES: usize = 4 << 20;
/// Headers `stage_lua` takes from Python first; each further block is four times larger.
const FIRST_BLOCK: usize = 16;

/// The Event-CID text of canonical event bytes: `b` + base32 (RFC 4648, lowercase,
/// unpadded) of CIDv1 / dag-cbor / BLAKE3-256.
fn event_cid(blob: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut raw = Vec::with_capacity(36);
    raw.extend_from_slice(&CID_PREFIX);
    raw.extend_from_slice(blake3::hash(blob).as_bytes());
    let mut out = String::with_capacity(59);
    out.push('b');
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in &raw {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The event bytes under a journal commit's tree, checked against its Event-CID.
fn event_blob(store: &Store, tree: &str, cid: &str, hint: &mut Hint) -> Option<Vec<u8>> {
    let tree = store.read(&hex_to_id(tree)?, TREE, hint)?;
    let at = tree.windows(EVENT_MARKER.len()).position(|w| w == EVENT_MARKER)? + EVENT_MARKER.len();
    let key: [u8; 20] = tree.get(at..at + 20)?.try_into().ok()?;
    let blob = store.read(&key, BLOB, hint)?;
    if event_cid(&blob) != cid {
        return None;
    }
    Some(blob)
}

/// A repository's pack files, opened lazily (one memory map per pack it needs).
#[pyclass(frozen, module = "gatos_native")]
struct Packs {
    store: Store,
}

type Columns<'py> = Bound<'py, PyTuple>;

fn columns<'py>(py: Python<'py>, rows: Vec<Row>, end: Option<String>, keys: bool) -> PyResult<Columns<'py>> {
    // Oldest first, as the Python walkers return them. Repeated type and actor strings
    // share one Python object.
    let n = rows.len();
    let (commits, trees, ulids, cids) = (PyList::empty(py), PyList::empty(py), PyList::empty(py), PyList::empty(py));
    let (types, actors, secs) = (PyList::empty(py), PyList::empty(py), PyList::empty(py));
    let mut last_type: Option<(String, Bound<'py, PyString>)> = None;
    let mut last_actor: Option<(String, Bound<'py, PyString>)> = None;
    let shared = |cache: &mut Option<(String, Bound<'py, PyString>)>, s: String| -> Bound<'py, PyString> {
        if let Some((text, obj)) = cache.as_ref() {
            if *text == s {
                return obj.clone();
            }
        }
        let obj = PyString::new(py, &s);
        *cache = Some((s, obj.clone()));
        obj
    };
    for row in rows.into_iter().rev() {
        commits.append(PyString::new(py, &row.commit))?;
        trees.append(PyString::new(py, &row.tree))?;
        if keys {
            let mut key = row.ulid;
            key.push_str(&row.cid);
            ulids.append(PyString::new(py, &key))?;
        } else {
            ulids.append(PyString::new(py, &row.ulid))?;
            cids.append(PyString::new(py, &row.cid))?;
        }
        types.append(shared(&mut last_type, row.etype))?;
        actors.append(shared(&mut last_actor, row.actor))?;
        secs.append(row.secs)?;
    }
    debug_assert_eq!(commits.len(), n);
    PyTuple::new(py, [commits.into_any(), trees.into_any(), ulids.into_any(), cids.into_any(), types.into_any(),
                      actors.into_any(), secs.into_any(), end.into_pyobject(py)?.into_any()])
}

#[pymethods]
impl Packs {
    #[new]
    fn new(objects_dir: PathBuf) -> Self {
        Packs { store: Store::open(&objects_dir) }
    }

    /// How many packs were found.
    #[getter]
    fn pack_count(&self) -> usize {
        self.store.pack_count()
    }

    /// Walk journals (a list of `(head, stop or None)`), in parallel threads when there
    /// are several, without the GIL. `clock` is `"committer"` (the fold's time) or
    /// `"author-utc"` (the cache's). Each journal gives `(commits, trees, ulids, cids,
    /// types, actors, seconds, end)`, oldest first, for the commits from `end`
    /// (exclusive) to the head: `end` is None when the walk reached the root, `stop`
    /// when it reached `stop`, else the commit Python must read itself and continue from.
    /// With `keys`, `ulids` holds `ulid ‖ cid` (the order key) and `cids` is empty.
    #[pyo3(signature = (jobs, clock, keys = false))]
    fn walk<'py>(&self, py: Python<'py>, jobs: Vec<(String, Option<String>)>, clock: &str, keys: bool
                 ) -> PyResult<Vec<Columns<'py>>> {
        let clock = match clock {
            "committer" => Clock::Committer,
            "author-utc" => Clock::AuthorUtc,
            _ => return Err(pyo3::exceptions::PyValueError::new_err("clock is 'committer' or 'author-utc'")),
        };
        let store = &self.store;
        let results: Vec<(Vec<Row>, Option<String>)> = py.allow_threads(|| {
            if jobs.len() < 2 {
                return jobs.iter().map(|(h, s)| walk(store, h, s.as_deref(), &clock)).collect();
            }
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len());
            let mut out: Vec<Option<(Vec<Row>, Option<String>)>> = (0..jobs.len()).map(|_| None).collect();
            std::thread::scope(|scope| {
                let chunks: Vec<Vec<usize>> = (0..threads).map(|t| (t..jobs.len()).step_by(threads).collect()).collect();
                let handles: Vec<_> = chunks
                    .into_iter()
                    .map(|mine| {
                        let (jobs, clock) = (&jobs, &clock);
                        scope.spawn(move || {
                            mine.into_iter().map(|j| (j, walk(store, &jobs[j].0, jobs[j].1.as_deref(), clock))).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                for handle in handles {
                    for (j, result) in handle.join().expect("walker thread") {
                        out[j] = Some(result);
                    }
                }
            });
            out.into_iter().map(|r| r.expect("every journal walked")).collect()
        });
        results.into_iter().map(|(rows, end)| columns(py, rows, end, keys)).collect()
    }

    /// One batch of a fold, from `headers[start]` on (echo_fold `Header` tuples:
    /// commit, tree, ulid, cid, type, time, journal). For each event, in order, until
    /// the first one this cannot do exactly as the Python path does: read its bytes,
    /// check the Event-CID, decode the envelope, check its ulid and type against the
    /// trailers, chain `inputs_root = blake3(inputs_root ‖ cid)`. The six fields of every
    /// event go into one Lua chunk (`return{type,actor,policy_root,payload,ts,caps,...}`,
    /// see `luatext`), all of it without the GIL, so the next batch is read while Lua
    /// folds this one. Also stops at values `luatext` leaves to Python, and once the
    /// chunk's text reaches `CHUNK_BYTES`.
    ///
    /// Returns `(n, chunk, roots, policies, packed, inputs_root)`: `n` events done; the
    /// chunk; each event's inputs root (32 bytes each); each event's policy root;
    /// ulid ‖ cid ‖ commit of every event; the last root.
    fn stage_lua<'py>(&self, py: Python<'py>, headers: &Bound<'py, PyList>, start: usize, inputs_root: &[u8]
                      ) -> PyResult<Bound<'py, PyTuple>> {
        let root: [u8; 32] = inputs_root.try_into().map_err(|_| pyo3::exceptions::PyValueError::new_err("inputs_root is 32 bytes"))?;
        let store = &self.store;
        let mut staged = Staged { done: 0, chunk: b"return{".to_vec(), roots: Vec::new(), policies: Vec::new(),
                                  packed: String::new(), root };
        // Headers are taken from Python in growing blocks: when the Python path has to
        // take the very next event, only a few were taken for nothing (taking them all
        // every time made a batch of such events quadratic).
        let (mut at, mut block) = (start, FIRST_BLOCK);
        while at < headers.len() {
            let end = (at + block).min(headers.len());
            let mut items: Vec<[String; 5]> = Vec::with_capacity(end - at);
            for i in at..end {
                let h = headers.get_item(i)?.downcast_into::<PyTuple>()?;
                let field = |k: usize| -> PyResult<String> { h.get_item(k)?.extract() };
                items.push([field(0)?, field(1)?, field(2)?, field(3)?, field(4)?]);
            }
            if !py.allow_threads(|| stage_lua_block(store, &items, &mut staged)) {
                break;
            }
            at = end;
            block *= 4;
        }
        staged.chunk.push(b'}');
        let policies = PyList::empty(py);
        let mut last: Option<(&str, Bound<'py, PyString>)> = None;
        for policy in &staged.policies {
            let obj = match &last {
                Some((text, obj)) if *text == policy.as_str() => obj.clone(),
                _ => PyString::new(py, policy),
            };
            policies.append(&obj)?;
            last = Some((policy.as_str(), obj));
        }
        PyTuple::new(py, [staged.done.into_pyobject(py)?.into_any(), PyBytes::new(py, &staged.chunk).into_any(),
                          PyBytes::new(py, &staged.roots).into_any(), policies.into_any(),
                          PyString::new(py, &staged.packed).into_any(), PyBytes::new(py, &staged.root).into_any()])
    }
}

struct Staged {
    done: usize,
    chunk: Vec<u8>,
    roots: Vec<u8>,
    policies: Vec<String>,
    packed: String,
    root: [u8; 32],
}

/// The work of `stage_lua` on one block of headers (commit, tree, ulid, cid, type), no
/// Python objects: appends to `out`; false when it stopped before the block's end.
fn stage_lua_block(store: &Store, items: &[[String; 5]], out: &mut Staged) -> bool {
    let mut hint = Hint::default();
    let mut slots: [Vec<u8>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for [commit, tree, ulid, cid, etype] in items {
        if out.chunk.len() >= CHUNK_BYTES {
            return false; // the rest in the next chunk: one chunk's text and code stay bounded
        }
        if ulid.len() != 26 || cid.len() != 59 || commit.len() != 40 || !ulid.is_ascii() || !commit.is_ascii() || !cid.is_ascii() {
            return false; // the engine sends such events one field at a time
        }
        let Some(blob) = event_blob(store, tree, cid, &mut hint) else { return false };
        let first = 6 * out.done; // this event's first index in the chunk's table, from 0
        let Some((actor, policy)) = envelope_lua(&blob, ulid, etype, first, &mut slots) else { return false };
        luatext::quote(&mut out.chunk, etype.as_bytes());
        out.chunk.push(b',');
        luatext::quote(&mut out.chunk, actor.as_bytes());
        out.chunk.push(b',');
        luatext::quote(&mut out.chunk, policy.as_bytes());
        out.chunk.push(b',');
        for slot in &slots {
            out.chunk.extend_from_slice(if slot.is_empty() { b"nil" } else { slot });
            out.chunk.push(b',');
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&out.root);
        hasher.update(cid.as_bytes());
        out.root = *hasher.finalize().as_bytes();
        out.roots.extend_from_slice(&out.root);
        out.policies.push(policy);
        out.packed.push_str(ulid);
        out.packed.push_str(cid);
        out.packed.push_str(commit);
        out.done += 1;
    }
    true
}

/// An envelope's actor and policy_root (their defaults when absent), with its payload,
/// ts and caps written as Lua text into `slots` (empty for absent or null), when its
/// ulid and type match and everything in it has a Lua text form (see `luatext`).
/// `first` is the position of the event's type in the chunk's table (for registers).
fn envelope_lua(blob: &[u8], ulid: &str, etype: &str, first: usize, slots: &mut [Vec<u8>; 3]) -> Option<(String, String)> {
    const FLUSH: usize = 50;
    for slot in slots.iter_mut() {
        slot.clear();
    }
    let mut d = cbor::Decoder::new(blob);
    let pairs = d.map_header().ok()?;
    let (mut actor, mut policy) = (String::new(), ZERO_OID.to_string());
    let (mut seen_ulid, mut seen_type) = (false, false);
    let mut previous: &[u8] = &[];
    let mut scratch = Vec::new();
    for _ in 0..pairs {
        let key = d.next_key(&mut previous).ok()?;
        match key {
            "ulid" | "type" | "actor" | "policy_root" => {
                // Must be text (the Python path leaves anything else to its own checks).
                let (text, _) = d.text().ok()?;
                match key {
                    "ulid" if text == ulid => seen_ulid = true,
                    "type" if text == etype => seen_type = true,
                    "actor" => actor = text.to_string(),
                    "policy_root" => policy = text.to_string(),
                    _ => return None,
                }
            }
            "payload" | "ts" | "caps" => {
                let slot = match key { "payload" => 0, "ts" => 1, _ => 2 };
                let registers = 1 + (first + 3 + slot) % FLUSH;
                if !d.lua(&mut slots[slot], 1, registers).ok()? {
                    slots[slot].clear();
                }
            }
            _ => {
                scratch.clear();
                d.lua(&mut scratch, 1, 0).ok()?;
            }
        }
    }
    if !d.done() || !seen_ulid || !seen_type {
        return None;
    }
    Some((actor, policy))
}

/// `ulid ‖ cid` ordering without building the concatenation (Python compares the
/// concatenated strings; UTF-8 byte order is code point order).
fn key_cmp(a: (&str, &str), b: (&str, &str)) -> std::cmp::Ordering {
    if a.0.len() == b.0.len() {
        (a.0.as_bytes(), a.1.as_bytes()).cmp(&(b.0.as_bytes(), b.1.as_bytes()))
    } else {
        a.0.bytes().chain(a.1.bytes()).cmp(b.0.bytes().chain(b.1.bytes()))
    }
}

/// `echo_fold._order.merge`: the k-way merge of journals (lists of `Header`, oldest
/// first) taking next the journal whose next event has the smallest `ulid ‖ cid`, ties
/// to the lower journal index. Returns the same list the Python merge returns.
#[pyfunction]
fn merge<'py>(py: Python<'py>, chains: Vec<Bound<'py, PyList>>) -> PyResult<Bound<'py, PyList>> {
    let mut keys: Vec<Vec<(Bound<'py, PyString>, Bound<'py, PyString>)>> = Vec::with_capacity(chains.len());
    for chain in &chains {
        let mut k = Vec::with_capacity(chain.len());
        for h in chain.iter() {
            let h = h.downcast_into::<PyTuple>()?;
            k.push((h.get_item(2)?.downcast_into::<PyString>()?, h.get_item(3)?.downcast_into::<PyString>()?));
        }
        keys.push(k);
    }
    let strs: Vec<Vec<(&str, &str)>> = keys
        .iter()
        .map(|k| k.iter().map(|(u, c)| Ok((u.to_str()?, c.to_str()?))).collect::<PyResult<Vec<_>>>())
        .collect::<PyResult<_>>()?;
    let out = PyList::empty(py);
    let mut at = vec![0usize; chains.len()];
    loop {
        let mut best: Option<usize> = None;
        for j in 0..chains.len() {
            if at[j] < strs[j].len() && best.is_none_or(|b| key_cmp(strs[j][at[j]], strs[b][at[b]]).is_lt()) {
                best = Some(j);
            }
        }
        let Some(j) = best else { break };
        out.append(chains[j].get_item(at[j])?)?;
        at[j] += 1;
    }
    Ok(out)
}

/// The journal each position of the k-way merge of sorted-key lists takes from
/// (`kv_cache._headers.merge_columns`: smallest key next, ties to the lower journal).
#[pyfunction]
fn merge_keys<'py>(py: Python<'py>, keys: Vec<Bound<'py, PyList>>) -> PyResult<Bound<'py, PyBytes>> {
    if keys.len() > 255 {
        return Err(pyo3::exceptions::PyValueError::new_err("at most 255 journals"));
    }
    let owned: Vec<Vec<Bound<'py, PyString>>> = keys
        .iter()
        .map(|l| l.iter().map(|k| k.downcast_into::<PyString>().map_err(PyErr::from)).collect::<PyResult<_>>())
        .collect::<PyResult<_>>()?;
    let strs: Vec<Vec<&str>> = owned
        .iter()
        .map(|l| l.iter().map(|k| k.to_str()).collect::<PyResult<_>>())
        .collect::<PyResult<_>>()?;
    let total: usize = strs.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut at = vec![0usize; strs.len()];
    for _ in 0..total {
        let mut best = usize::MAX;
        for j in 0..strs.len() {
            if at[j] < strs[j].len() && (best == usize::MAX || strs[j][at[j]].as_bytes() < strs[best][at[best]].as_bytes()) {
                best = j;
            }
        }
        out.push(best as u8);
        at[best] += 1;
    }
    Ok(PyBytes::new(py, &out))
}

#[pymodule]
fn gatos_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Packs>()?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(merge_keys, m)?)?;
    m.add_function(wrap_pyfunction!(buspack::messages, m)?)?;
    m.add_function(wrap_pyfunction!(buspack::assemble, m)?)?;
    m.add_function(wrap_pyfunction!(envelope::envelope, m)?)?;
    m.add("ABI", 4)?;
    Ok(())
}
