//! Reading DAG-CBOR event envelopes (the values themselves become Lua text: `luatext`).
//!
//! Only the plain data model is read: integers, byte and text strings, arrays, maps with
//! text keys in strictly increasing canonical order, `false`, `true`, `null`. Anything
//! else (tags, floats, `undefined`, indefinite lengths, keys out of order or repeated,
//! trailing bytes, very deep nesting) is `Err(Unusual)`: the caller then decodes that
//! event with cbor2 in Python, which gives its own answer or error.

pub struct Unusual;

pub struct Decoder<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data, at: 0 }
    }

    pub fn done(&self) -> bool {
        self.at == self.data.len()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.at
    }

    pub(crate) fn byte(&mut self) -> Result<u8, Unusual> {
        let b = *self.data.get(self.at).ok_or(Unusual)?;
        self.at += 1;
        Ok(b)
    }

    pub(crate) fn argument(&mut self, info: u8) -> Result<u64, Unusual> {
        let n = match info {
            0..=23 => return Ok(info as u64),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err(Unusual),
        };
        let end = self.at.checked_add(n).ok_or(Unusual)?;
        let bytes = self.data.get(self.at..end).ok_or(Unusual)?;
        self.at = end;
        Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    pub(crate) fn take(&mut self, len: u64) -> Result<&'a [u8], Unusual> {
        let len = usize::try_from(len).map_err(|_| Unusual)?;
        let end = self.at.checked_add(len).ok_or(Unusual)?;
        let out = self.data.get(self.at..end).ok_or(Unusual)?;
        self.at = end;
        Ok(out)
    }

    /// A text string (major type 3) as `&str`, with its encoded bytes for key ordering.
    pub fn text(&mut self) -> Result<(&'a str, &'a [u8]), Unusual> {
        let start = self.at;
        let head = self.byte()?;
        if head >> 5 != 3 {
            return Err(Unusual);
        }
        let len = self.argument(head & 31)?;
        let raw = self.take(len)?;
        let s = std::str::from_utf8(raw).map_err(|_| Unusual)?;
        Ok((s, &self.data[start..self.at]))
    }

    /// The next key of a map, which must follow `previous` in DAG-CBOR order (canonical,
    /// so never repeated); `previous` becomes this key.
    pub fn next_key(&mut self, previous: &mut &'a [u8]) -> Result<&'a str, Unusual> {
        let (key, encoded) = self.text()?;
        if !previous.is_empty() && !canonical_less(previous, encoded) {
            return Err(Unusual);
        }
        *previous = encoded;
        Ok(key)
    }

    /// The length argument of an array or map, refused when it cannot fit the bytes left.
    pub(crate) fn count(&mut self, info: u8) -> Result<u64, Unusual> {
        let len = self.argument(info)?;
        if len > self.remaining() as u64 {
            return Err(Unusual);
        }
        Ok(len)
    }

    /// The number of pairs of the map that starts here.
    pub fn map_header(&mut self) -> Result<u64, Unusual> {
        let head = self.byte()?;
        if head >> 5 != 5 {
            return Err(Unusual);
        }
        self.argument(head & 31)
    }
}

/// DAG-CBOR key order: shorter encoding first, then bytewise.
pub fn canonical_less(a: &[u8], b: &[u8]) -> bool {
    (a.len(), a) < (b.len(), b)
}
