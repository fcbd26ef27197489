//! Building bus message commits and packs: the bus writer's per-message work.
//!
//! `messages` gives exactly what `mind_bus.message_commit_parts` (signing included)
//! followed by `ledger_git.pack_entries` gives for objects stored uncompressed, and
//! `assemble` exactly what `ledger_git.assemble_pack` gives. Anything it does not do
//! the plain way (an object long enough to be deflated) makes it answer `None`, and
//! Python builds that batch itself.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use ed25519_dalek::{Signer, SigningKey};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use sha1::{Digest, Sha1};

const COMMIT: u8 = 1;
const TREE: u8 = 2;
const BLOB: u8 = 3;
const STORED_MAX: usize = 0xFFFF;

/// The Git object id of `data` stored as `kind`.
pub fn git_hash(kind: &str, data: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(kind.as_bytes());
    h.update(b" ");
    h.update(data.len().to_string().as_bytes());
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn hex(raw: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(raw.len() * 2);
    for &b in raw {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// A pack entry of a whole object stored uncompressed: the type/size header, then a
/// zlib stream of stored deflate blocks (as `ledger_git._deflate.stored`).
fn stored_entry(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 24);
    let mut size = data.len();
    let mut byte = (kind << 4) | (size & 0x0F) as u8;
    size >>= 4;
    while size != 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7F) as u8;
        size >>= 7;
    }
    out.push(byte);
    out.extend_from_slice(&[0x78, 0x01]);
    let n = data.len();
    if n == 0 {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    let mut start = 0;
    while start < n {
        let size = STORED_MAX.min(n - start);
        let last = u8::from(start + size >= n);
        let (lo, hi) = ((size & 0xFF) as u8, (size >> 8) as u8);
        out.extend_from_slice(&[last, lo, hi, !lo, !hi]);
        out.extend_from_slice(&data[start..start + size]);
        start += size;
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// The pack entries of a batch, in order, each object once (as `pack_entries`).
struct Entries<'py> {
    py: Python<'py>,
    seen: HashSet<[u8; 20]>,
    list: Bound<'py, PyList>,
}

impl<'py> Entries<'py> {
    fn add(&mut self, kind: u8, raw: [u8; 20], data: &[u8]) -> PyResult<()> {
        if !self.seen.insert(raw) {
            return Ok(());
        }
        let entry = stored_entry(kind, data);
        let crc = crc32fast::hash(&entry);
        self.list.append(PyTuple::new(self.py, [
            PyBytes::new(self.py, &raw).into_any(),
            crc.into_pyobject(self.py)?.into_any(),
            PyBytes::new(self.py, &entry).into_any(),
        ])?)
    }
}

/// Signing keys by seed, kept between calls: making one derives its public key (as
/// long as a signature), which cost each batch about as much as one more message
/// (a batch of one: 41 against 23 us in-process). The node holds the same keys; the
/// cache is emptied past `KEYS_MAX` seeds.
///
/// Signing on a second thread (rayon, the GIL released) halved the signing of a batch
/// in-process but made the bus slower on two cores (7,418-7,751 against 8,538-8,602
/// msg/s alternating): the helper thread took CPU from the daemon's loop and the
/// clients, and its wake-ups cost system time. So the batch is signed here, in turn.
static KEYS: OnceLock<Mutex<HashMap<[u8; 32], SigningKey>>> = OnceLock::new();
const KEYS_MAX: usize = 4096;

/// The key of `seed` from `KEYS` (made and kept when missing). The lock is held only
/// here, never while Python objects are touched, and a poisoned cache is used as is
/// (it only ever holds complete keys).
fn cached_key(seed: &[u8; 32]) -> SigningKey {
    let mut cache = KEYS.get_or_init(|| Mutex::new(HashMap::new())).lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if cache.len() > KEYS_MAX {
        cache.clear();
    }
    cache.entry(*seed).or_insert_with(|| SigningKey::from_bytes(seed)).clone()
}

/// Build (and sign where asked) a batch of message commits.
///
/// `items`: one tuple per message, in batch order: `(canonical, signature, seed, cid,
/// actor, ulid, seconds, topic, shard, position, segment, segment_start, segment_bytes,
/// shard_map, parent, chain, digest)`. An empty `signature` is made here with the
/// 32-byte ed25519 `seed`. The parent is the commit of item `chain` of this batch when
/// `chain >= 0`, else `parent` (a hex id, or None for a shard's first message).
/// `prefix` is `(event tree entry, signature tree entry, subject)`.
///
/// Returns `(commit ids, pack entries)`, or None when an object is `store_below` bytes
/// or longer (the Python path deflates those).
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn messages<'py>(py: Python<'py>, items: &Bound<'py, PyList>, prefix: (Vec<u8>, Vec<u8>, String),
                     store_below: usize) -> PyResult<Option<(Bound<'py, PyList>, Bound<'py, PyList>)>> {
    let (event_entry, sig_entry, subject) = prefix;
    let mut entries = Entries { py, seen: HashSet::new(), list: PyList::empty(py) };
    let oids = PyList::empty(py);
    let mut commits: Vec<String> = Vec::with_capacity(items.len());
    let mut text = String::with_capacity(1024);
    let mut keys: HashMap<[u8; 32], SigningKey> = HashMap::new();  // this call's, from `KEYS`
    for item in items.iter() {
        let t = item.downcast::<PyTuple>()?;
        let canonical = t.get_item(0)?;
        let canonical = canonical.downcast::<PyBytes>()?.as_bytes();
        let given = t.get_item(1)?;
        let given = given.downcast::<PyBytes>()?.as_bytes();
        let signature: Vec<u8> = if given.is_empty() {
            let seed = t.get_item(2)?;
            let seed: [u8; 32] = seed.downcast::<PyBytes>()?.as_bytes().try_into()
                .map_err(|_| pyo3::exceptions::PyValueError::new_err("an ed25519 seed is 32 bytes"))?;
            keys.entry(seed).or_insert_with(|| cached_key(&seed)).sign(canonical).to_bytes().to_vec()
        } else {
            given.to_vec()
        };
        if signature.len() != 64 {
            return Err(pyo3::exceptions::PyValueError::new_err("an ed25519 signature is 64 bytes"));
        }
        let cid: String = t.get_item(3)?.extract()?;
        let actor: String = t.get_item(4)?.extract()?;
        let ulid: String = t.get_item(5)?.extract()?;
        let seconds: u64 = t.get_item(6)?.extract()?;
        let topic: String = t.get_item(7)?.extract()?;
        let nums: [u64; 6] = [t.get_item(8)?.extract()?, t.get_item(9)?.extract()?, t.get_item(10)?.extract()?,
                              t.get_item(11)?.extract()?, t.get_item(12)?.extract()?, t.get_item(13)?.extract()?];
        let parent: Option<String> = t.get_item(14)?.extract()?;
        let chain: i64 = t.get_item(15)?.extract()?;
        let digest: String = t.get_item(16)?.extract()?;
        if canonical.len() >= store_below {
            return Ok(None);
        }
        let event_raw = git_hash("blob", canonical);
        let sig_raw = git_hash("blob", &signature);
        let mut tree = Vec::with_capacity(event_entry.len() + sig_entry.len() + 40);
        tree.extend_from_slice(&event_entry);
        tree.extend_from_slice(&event_raw);
        tree.extend_from_slice(&sig_entry);
        tree.extend_from_slice(&sig_raw);
        let tree_raw = git_hash("tree", &tree);
        let parent = if chain >= 0 {
            Some(commits.get(chain as usize).cloned().ok_or_else(
                || pyo3::exceptions::PyValueError::new_err("`chain` names a later item"))?)
        } else {
            parent
        };
        text.clear();
        let ident = format!("{actor} <{actor}> {seconds} +0000");
        text.push_str("tree ");
        text.push_str(&hex(&tree_raw));
        text.push('\n');
        if let Some(p) = &parent {
            text.push_str("parent ");
            text.push_str(p);
            text.push('\n');
        }
        let [shard, position, segment, start, used, map] = nums;
        text.push_str(&format!(
            "author {ident}\ncommitter {ident}\n\n{subject}\n\nTopic: {topic}\nShard: {shard}\n\
             Position: {position}\nSegment: {segment}\nSegment-Start: {start}\nSegment-Bytes: {used}\n\
             Shard-Map: {map}\nUlid: {ulid}\nActor: {actor}\nEvent-CID: {cid}\nBody-Hash: {digest}\n\
             Sig: ed25519:{}\n", hex(&signature)));
        if text.len() >= store_below || tree.len() >= store_below || signature.len() >= store_below {
            return Ok(None);
        }
        let commit_raw = git_hash("commit", text.as_bytes());
        entries.add(BLOB, event_raw, canonical)?;
        entries.add(BLOB, sig_raw, &signature)?;
        entries.add(TREE, tree_raw, &tree)?;
        entries.add(COMMIT, commit_raw, text.as_bytes())?;
        let commit = hex(&commit_raw);
        oids.append(PyString::new(py, &commit))?;
        commits.push(commit);
    }
    Ok(Some((oids, entries.list)))
}

/// `ledger_git.assemble_pack`: (pack bytes, idx bytes, pack checksum hex) of entries
/// `(raw id, crc32, entry bytes)` with unique ids, in the given order.
#[pyfunction]
pub fn assemble<'py>(py: Python<'py>, entries: &Bound<'py, PyList>
                     ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, String)> {
    let n = entries.len();
    let mut rows: Vec<([u8; 20], u32, u64)> = Vec::with_capacity(n);
    let mut pack: Vec<u8> = Vec::new();
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&(n as u32).to_be_bytes());
    for entry in entries.iter() {
        let raw = entry.get_item(0)?;
        let raw: [u8; 20] = raw.downcast::<PyBytes>()?.as_bytes().try_into()
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("an object id is 20 bytes"))?;
        let crc: u32 = entry.get_item(1)?.extract()?;
        let data = entry.get_item(2)?;
        rows.push((raw, crc, pack.len() as u64));
        pack.extend_from_slice(data.downcast::<PyBytes>()?.as_bytes());
    }
    let pack_sum: [u8; 20] = Sha1::digest(&pack).into();
    pack.extend_from_slice(&pack_sum);
    rows.sort_unstable_by_key(|r| r.0);
    let mut idx: Vec<u8> = Vec::with_capacity(8 + 1024 + n * 28 + 40);
    idx.extend_from_slice(b"\xfftOc");
    idx.extend_from_slice(&2u32.to_be_bytes());
    let mut counts = [0u32; 256];
    for row in &rows {
        counts[row.0[0] as usize] += 1;
    }
    let mut total = 0u32;
    for count in counts {
        total += count;
        idx.extend_from_slice(&total.to_be_bytes());
    }
    for row in &rows {
        idx.extend_from_slice(&row.0);
    }
    for row in &rows {
        idx.extend_from_slice(&row.1.to_be_bytes());
    }
    let mut large: Vec<u64> = Vec::new();
    for row in &rows {
        if row.2 < 0x8000_0000 {
            idx.extend_from_slice(&(row.2 as u32).to_be_bytes());
        } else {
            idx.extend_from_slice(&(0x8000_0000u32 | large.len() as u32).to_be_bytes());
            large.push(row.2);
        }
    }
    for off in large {
        idx.extend_from_slice(&off.to_be_bytes());
    }
    idx.extend_from_slice(&pack_sum);
    let idx_sum: [u8; 20] = Sha1::digest(&idx).into();
    idx.extend_from_slice(&idx_sum);
    Ok((PyBytes::new(py, &pack), PyBytes::new(py, &idx), hex(&pack_sum)))
}
