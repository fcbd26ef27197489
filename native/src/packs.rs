//! Whole objects of a repository's pack files, looked up by raw 20-byte id.
//!
//! Read-only and conservative, like `echo_fold/_packs.py`: only version-2 indexes, only
//! whole objects (deltas, loose objects and anything unexpected are a `None`, and the
//! Python side reads that object through the port). Every inflate must end exactly at
//! the object's declared size, with zlib's Adler-32 checked.

use std::cell::RefCell;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flate2::{Decompress, FlushDecompress, Status};
use memmap2::Mmap;

pub const COMMIT: u8 = 1;
pub const TREE: u8 = 2;
pub const BLOB: u8 = 3;

/// The largest object inflated here; anything bigger goes through the port.
const MAX_OBJECT: usize = 64 << 20;

struct Mapped {
    idx: Mmap,
    data: Mmap,
    count: usize,
}

struct Pack {
    idx_path: PathBuf,
    pack_path: PathBuf,
    mapped: OnceLock<Option<Mapped>>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Pack {
    fn open(&self) -> Option<&Mapped> {
        self.mapped
            .get_or_init(|| {
                let idx_file = File::open(&self.idx_path).ok()?;
                let pack_file = File::open(&self.pack_path).ok()?;
                // SAFETY: pack and index files are never rewritten in place by Git (new
                // packs get new names); a file removed while mapped stays readable.
                let idx = unsafe { Mmap::map(&idx_file) }.ok()?;
                let data = unsafe { Mmap::map(&pack_file) }.ok()?;
                if idx.len() < 8 + 1024 || &idx[..8] != b"\xfftOc\0\0\0\x02" || data.len() < 12 || &data[..4] != b"PACK" {
                    return None;
                }
                let count = be32(&idx, 8 + 4 * 255) as usize;
                if idx.len() < 8 + 1024 + 28 * count + 40 {
                    return None;
                }
                Some(Mapped { idx, data, count })
            })
            .as_ref()
    }

    fn find(&self, key: &[u8; 20]) -> Option<usize> {
        let m = self.open()?;
        let idx = &m.idx[..];
        let first = key[0] as usize;
        let mut lo = if first == 0 { 0 } else { be32(idx, 8 + 4 * (first - 1)) as usize };
        let mut hi = be32(idx, 8 + 4 * first) as usize;
        if hi > m.count || lo > hi {
            return None;
        }
        let base = 8 + 1024;
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = base + 20 * mid;
            match idx[at..at + 20].cmp(&key[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let at = base + 24 * m.count + 4 * mid;
                    let off = be32(idx, at);
                    if off & 0x8000_0000 == 0 {
                        return Some(off as usize);
                    }
                    let at = base + 28 * m.count + 8 * (off & 0x7fff_ffff) as usize;
                    if at + 8 > idx.len() - 40 {
                        return None;
                    }
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&idx[at..at + 8]);
                    return usize::try_from(u64::from_be_bytes(b)).ok();
                }
            }
        }
        None
    }
}

thread_local! {
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(true));
}

/// Inflate the zlib stream at the start of `input` into exactly `size` bytes: the
/// stream must end (Adler-32 checked) with that many bytes out, neither more nor less.
fn inflate(input: &[u8], size: usize) -> Option<Vec<u8>> {
    INFLATE.with(|cell| {
        let mut z = cell.borrow_mut();
        z.reset(true);
        // One spare byte, so a stream that would inflate past `size` is seen, not cut.
        let mut out = Vec::with_capacity(size + 1);
        let status = z.decompress_vec(input, &mut out, FlushDecompress::Finish).ok()?;
        (status == Status::StreamEnd && out.len() == size).then_some(out)
    })
}

pub struct Store {
    packs: Vec<Pack>,
}

/// Where the previous object of one reader was found (per thread: two walkers sharing
/// one hint would keep sending each other through every pack).
#[derive(Default)]
pub struct Hint(usize);

impl Store {
    /// The packs under `objects_dir/pack`, newest first (journal heads live in recent packs).
    pub fn open(objects_dir: &Path) -> Store {
        let folder = objects_dir.join("pack");
        let mut found: Vec<(std::time::SystemTime, String, Pack)> = Vec::new();
        if let Ok(entries) = fs::read_dir(&folder) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".idx") {
                    let pack_path = folder.join(format!("{stem}.pack"));
                    if !pack_path.exists() {
                        continue;
                    }
                    let mtime = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                    found.push((mtime, name.clone(), Pack { idx_path: entry.path(), pack_path, mapped: OnceLock::new() }));
                }
            }
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Store { packs: found.into_iter().map(|(_, _, p)| p).collect() }
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    fn locate(&self, key: &[u8; 20], hint: &mut Hint) -> Option<(usize, usize)> {
        // The pack of the previous object, then the next older one (a journal's parent
        // is usually in the same pack or the one written before it), then all of them.
        let last = hint.0;
        for i in [last, last + 1] {
            if let Some(off) = self.packs.get(i).and_then(|p| p.find(key)) {
                hint.0 = i;
                return Some((i, off));
            }
        }
        for (i, pack) in self.packs.iter().enumerate() {
            if i == last || i == last + 1 {
                continue;
            }
            if let Some(off) = pack.find(key) {
                hint.0 = i;
                return Some((i, off));
            }
        }
        None
    }

    /// The body of `key` if it is a whole object of type `kind` in a pack.
    pub fn read(&self, key: &[u8; 20], kind: u8, hint: &mut Hint) -> Option<Vec<u8>> {
        let (i, offset) = self.locate(key, hint)?;
        let data = &self.packs[i].open()?.data[..];
        let mut at = offset;
        let mut byte = *data.get(at)?;
        at += 1;
        if (byte >> 4) & 7 != kind {
            return None; // a delta or another type: the port resolves it
        }
        let mut size = (byte & 15) as usize;
        let mut shift = 4;
        while byte & 0x80 != 0 {
            byte = *data.get(at)?;
            at += 1;
            if shift > 56 {
                return None;
            }
            size |= ((byte & 0x7f) as usize) << shift;
            shift += 7;
        }
        if size > MAX_OBJECT || at >= data.len() {
            return None;
        }
        // A zlib stream never needs more than size + size/1000*... bytes; bound the slice
        // generously (stored blocks add 5 bytes per 64 KiB) without running past the map.
        let end = data.len().min(at + size + (size >> 4) + 64);
        inflate(&data[at..end], size)
    }
}
