//! Journal commits in the exact layout the ledger writes (SPEC §5), read natively.
//!
//! `parse` accepts only a strict subset of what the Python fast paths accept
//! (`echo_fold._source._LAYOUT`, `kv_cache._headers._FAST`), and gives the same fields
//! for it; anything else is `None` and the walk stops there, so Python reads that
//! commit (and the rest of the chain) its own way. A commit is used only when its
//! bytes hash (SHA-1 with the Git header) to the id it was reached by.


use crate::packs::{Hint, Store, COMMIT};

pub struct Commit<'a> {
    pub tree: &'a str,
    pub parent: Option<&'a str>,
    pub author_secs: u64,
    pub author_utc: bool,
    pub committer_secs: u64,
    pub cid: &'a str,
    pub etype: &'a str,
    pub actor: &'a str,
    pub ulid: &'a str,
}

fn is_lower_hex(s: &[u8]) -> bool {
    s.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

pub fn hex_to_id(s: &str) -> Option<[u8; 20]> {
    let b = s.as_bytes();
    if b.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for i in 0..20 {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// The next line (without its newline) and the rest; None when there is no newline.
fn line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = data.iter().position(|&c| c == b'\n')?;
    Some((&data[..at], &data[at + 1..]))
}

/// `<prefix>[^\n]* (\d+) [+-]\d{4}`: the seconds, and whether the zone is `+0000`.
fn ident_time(line: &[u8], prefix: &[u8]) -> Option<(u64, bool)> {
    let rest = line.strip_prefix(prefix)?;
    let n = rest.len();
    if n < 8 {
        return None;
    }
    let zone = &rest[n - 5..];
    if rest[n - 6] != b' ' || !(zone[0] == b'+' || zone[0] == b'-') || !zone[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let before = &rest[..n - 6];
    let space = before.iter().rposition(|&c| c == b' ')?;
    let digits = &before[space + 1..];
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
    Some((secs, zone == b"+0000"))
}

fn field<'a>(data: &'a [u8], name: &[u8]) -> Option<(&'a str, &'a [u8])> {
    let (l, rest) = line(data)?;
    let value = l.strip_prefix(name)?;
    if value.is_empty() {
        return None;
    }
    Some((std::str::from_utf8(value).ok()?, rest))
}

pub fn parse(data: &[u8]) -> Option<Commit<'_>> {
    let (l, rest) = line(data)?;
    let tree = l.strip_prefix(b"tree ")?;
    if tree.len() != 40 || !is_lower_hex(tree) {
        return None;
    }
    let (mut l, mut rest) = line(rest)?;
    let mut parent = None;
    if let Some(p) = l.strip_prefix(b"parent ") {
        if p.len() != 40 || !is_lower_hex(p) {
            return None;
        }
        parent = Some(std::str::from_utf8(p).ok()?);
        (l, rest) = line(rest)?;
    }
    let (author_secs, author_utc) = ident_time(l, b"author ")?;
    let (l, rest) = line(rest)?;
    let (committer_secs, _) = ident_time(l, b"committer ")?;
    let (blank, rest) = line(rest)?;
    if !blank.is_empty() {
        return None;
    }
    let (_subject, rest) = line(rest)?;
    let (blank, rest) = line(rest)?;
    if !blank.is_empty() {
        return None;
    }
    let (cid, rest) = field(rest, b"Event-CID: ")?;
    let (etype, rest) = field(rest, b"Event-Type: ")?;
    let (actor, rest) = field(rest, b"Actor: ")?;
    let (ulid, _) = field(rest, b"Ulid: ")?;
    Some(Commit {
        tree: std::str::from_utf8(tree).ok()?,
        parent,
        author_secs,
        author_utc,
        committer_secs,
        cid,
        etype,
        actor,
        ulid,
    })
}

/// A commit's bytes from the packs, only when they hash to `key`.
pub fn read_commit(store: &Store, key: &[u8; 20], hint: &mut Hint) -> Option<Vec<u8>> {
    let body = store.read(key, COMMIT, hint)?;
    if &crate::buspack::git_hash("commit", &body) != key {
        return None;
    }
    Some(body)
}

/// What one walked commit contributes (owned: the walk runs without the GIL).
pub struct Row {
    pub commit: String,
    pub tree: String,
    pub ulid: String,
    pub cid: String,
    pub etype: String,
    pub actor: String,
    pub secs: u64,
}

pub enum Clock {
    /// The fold's: the committer time, any zone.
    Committer,
    /// The cache's: the author time, which must be in `+0000`.
    AuthorUtc,
}

/// Walk from `head` back to `stop` (exclusive). Returns the rows (newest first) and
/// where the walk ended: `None` at the root, else the commit it could not
/// read (not in a pack, a delta, a bad hash, another layout) for Python to continue from;
/// `stop` itself when the walk reached it.
pub fn walk(store: &Store, head: &str, stop: Option<&str>, clock: &Clock) -> (Vec<Row>, Option<String>) {
    let mut rows = Vec::new();
    let mut hint = Hint::default();
    let mut oid = head.to_string();
    loop {
        if Some(oid.as_str()) == stop {
            return (rows, Some(oid));
        }
        let Some(key) = hex_to_id(&oid) else { return (rows, Some(oid)) };
        if oid.bytes().any(|c| c.is_ascii_uppercase()) {
            return (rows, Some(oid));
        }
        let Some(body) = read_commit(store, &key, &mut hint) else { return (rows, Some(oid)) };
        let Some(c) = parse(&body) else { return (rows, Some(oid)) };
        let secs = match clock {
            Clock::Committer => c.committer_secs,
            Clock::AuthorUtc if c.author_utc => c.author_secs,
            Clock::AuthorUtc => return (rows, Some(oid)),
        };
        let next = c.parent.map(str::to_string);
        rows.push(Row {
            commit: oid,
            tree: c.tree.to_string(),
            ulid: c.ulid.to_string(),
            cid: c.cid.to_string(),
            etype: c.etype.to_string(),
            actor: c.actor.to_string(),
            secs,
        });
        match next {
            Some(p) => oid = p,
            None => return (rows, None),
        }
    }
}
