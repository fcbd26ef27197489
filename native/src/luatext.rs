//! DAG-CBOR values as Lua 5.4 constructor text, built without the GIL.
//!
//! The fold sandbox loads a batch of events as one text chunk (`load(text, "=events",
//! "t", {})`) instead of converting Python objects into Lua tables one by one. The text
//! must give exactly the tables that lupa's `table_from(..., recursive=True)` gives for
//! the objects `cbor::Decoder::value` decodes; whatever could differ is `Err(Unusual)`
//! and that event takes the Python path:
//!
//! * integers outside the 64-bit signed range (lupa's conversion decides those);
//! * an array holding `null` (a hole: `#t` of a constructor and of `rawseti` calls can
//!   differ);
//! * nesting deeper than `MAX_DEPTH`, or a constructor needing more Lua registers than
//!   `MAX_REGISTERS` (positional items stay in registers until every 50th).
//!
//! Maps drop `null` values (`t[k] = nil` adds nothing), as lupa does. Strings are quoted
//! with `"`; a backslash, a quote and every byte below 0x20 or equal to 0x7f are escaped
//! (`\ddd` with three digits), so no byte of the data can end the string early.

use crate::cbor::{Decoder, Unusual};

const MAX_DEPTH: usize = 32;
const MAX_REGISTERS: usize = 200;
const FIELDS_PER_FLUSH: usize = 50; // Lua's LFIELDS_PER_FLUSH

/// Append `bytes` as a quoted Lua string.
pub fn quote(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => {
                out.push(b'\\');
                out.push(b'0' + b / 100);
                out.push(b'0' + (b / 10) % 10);
                out.push(b'0' + b % 10);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn integer(out: &mut Vec<u8>, v: i64) {
    if v == i64::MIN {
        // `-9223372036854775808` would read as a float: the literal overflows first.
        out.extend_from_slice(b"(-9223372036854775807-1)");
    } else {
        out.extend_from_slice(v.to_string().as_bytes());
    }
}

impl<'a> Decoder<'a> {
    /// The next value as Lua text; `registers` are those the enclosing constructors hold.
    /// `Ok(false)` for `null` (nothing written: the caller writes `nil` or skips the pair).
    pub fn lua(&mut self, out: &mut Vec<u8>, depth: usize, registers: usize) -> Result<bool, Unusual> {
        if depth > MAX_DEPTH || registers > MAX_REGISTERS {
            return Err(Unusual);
        }
        let head = self.byte()?;
        let info = head & 31;
        match head >> 5 {
            0 => integer(out, i64::try_from(self.argument(info)?).map_err(|_| Unusual)?),
            1 => {
                let n = i64::try_from(self.argument(info)?).map_err(|_| Unusual)?;
                integer(out, -1 - n);
            }
            2 => {
                let len = self.argument(info)?;
                quote(out, self.take(len)?);
            }
            3 => {
                let len = self.argument(info)?;
                let raw = self.take(len)?;
                std::str::from_utf8(raw).map_err(|_| Unusual)?;
                quote(out, raw);
            }
            4 => {
                let len = self.count(info)?;
                out.push(b'{');
                for i in 0..len as usize {
                    let pending = i % FIELDS_PER_FLUSH;
                    if !self.lua(out, depth + 1, registers + 1 + pending)? {
                        return Err(Unusual); // a hole
                    }
                    out.push(b',');
                }
                out.push(b'}');
            }
            5 => {
                let len = self.count(info)?;
                out.push(b'{');
                let mut previous: &[u8] = &[];
                for _ in 0..len {
                    let key = self.next_key(&mut previous)?;
                    let mark = out.len();
                    out.push(b'[');
                    quote(out, key.as_bytes());
                    out.extend_from_slice(b"]=");
                    // The table, a key that may need a register, the value.
                    if self.lua(out, depth + 1, registers + 2)? {
                        out.push(b',');
                    } else {
                        out.truncate(mark);
                    }
                }
                out.push(b'}');
            }
            7 => match info {
                20 => out.extend_from_slice(b"false"),
                21 => out.extend_from_slice(b"true"),
                22 => return Ok(false),
                _ => return Err(Unusual),
            },
            _ => return Err(Unusual),
        }
        Ok(true)
    }
}
