//! The structure of a checkpoint (nested dicts, lists, scalars, tensor placeholders) as a
//! tagged value tree with its own compact binary encoding: no pickle, nothing executable.

use super::bytes::{Reader, Writer};
use crate::error::{Error, Result};

/// Deepest nesting a decoder accepts (guards the stack against hostile files).
pub const MAX_DEPTH: usize = 200;

/// One node of a checkpoint's structure.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Python `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// An integer of any size, as decimal text (e.g. Python ints beyond 64 bits).
    BigInt(String),
    /// A 64-bit float (bit-exact, NaN payloads included).
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An ordered list.
    List(Vec<Value>),
    /// A tuple (kept distinct from lists so hosts can restore the exact type).
    Tuple(Vec<Value>),
    /// An ordered mapping with arbitrary value keys.
    Map(Vec<(Value, Value)>),
    /// Placeholder for tensor `i` of the checkpoint's tensor table.
    Tensor(u64),
    /// A host-specific value the host knows how to rebuild, e.g. ("torch.dtype", "float32").
    Ext(String, Box<Value>),
}

const NONE: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const BIGINT: u8 = 4;
const FLOAT: u8 = 5;
const STR: u8 = 6;
const BYTES: u8 = 7;
const LIST: u8 = 8;
const TUPLE: u8 = 9;
const MAP: u8 = 10;
const TENSOR: u8 = 11;
const EXT: u8 = 12;

impl Value {
    /// Appends the binary encoding of this value.
    pub fn write(&self, w: &mut Writer) {
        match self {
            Value::None => w.u8(NONE),
            Value::Bool(b) => w.u8(if *b { TRUE } else { FALSE }),
            Value::Int(i) => {
                w.u8(INT);
                w.varint(((*i << 1) ^ (*i >> 63)) as u64);
            }
            Value::BigInt(s) => {
                w.u8(BIGINT);
                w.str(s);
            }
            Value::Float(f) => {
                w.u8(FLOAT);
                w.u64(f.to_bits());
            }
            Value::Str(s) => {
                w.u8(STR);
                w.str(s);
            }
            Value::Bytes(b) => {
                w.u8(BYTES);
                w.varint(b.len() as u64);
                w.bytes(b);
            }
            Value::List(items) | Value::Tuple(items) => {
                w.u8(if matches!(self, Value::List(_)) {
                    LIST
                } else {
                    TUPLE
                });
                w.varint(items.len() as u64);
                items.iter().for_each(|v| v.write(w));
            }
            Value::Map(items) => {
                w.u8(MAP);
                w.varint(items.len() as u64);
                for (k, v) in items {
                    k.write(w);
                    v.write(w);
                }
            }
            Value::Tensor(i) => {
                w.u8(TENSOR);
                w.varint(*i);
            }
            Value::Ext(kind, v) => {
                w.u8(EXT);
                w.str(kind);
                v.write(w);
            }
        }
    }

    /// Reads one value, rejecting unknown tags, bad UTF-8 and nesting deeper than
    /// [`MAX_DEPTH`].
    pub fn read(r: &mut Reader) -> Result<Value> {
        Self::read_at(r, 0)
    }

    fn read_at(r: &mut Reader, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(Error::Format(format!(
                "structure nested deeper than {MAX_DEPTH}"
            )));
        }
        Ok(match r.u8()? {
            NONE => Value::None,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => {
                let z = r.varint()?;
                Value::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            BIGINT => {
                let s = r.str()?;
                let digits = s.strip_prefix('-').unwrap_or(s);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Error::Format(format!("bad big integer {s:?}")));
                }
                Value::BigInt(s.to_owned())
            }
            FLOAT => Value::Float(f64::from_bits(r.u64()?)),
            STR => Value::Str(r.str()?.to_owned()),
            BYTES => {
                let n = r.count(1)?;
                Value::Bytes(r.take(n)?.to_vec())
            }
            tag @ (LIST | TUPLE) => {
                let n = r.count(1)?;
                let items = (0..n)
                    .map(|_| Self::read_at(r, depth + 1))
                    .collect::<Result<_>>()?;
                if tag == LIST {
                    Value::List(items)
                } else {
                    Value::Tuple(items)
                }
            }
            MAP => {
                // No reservation from the declared count: nested maps could otherwise
                // reserve far more than the file holds. Items grow as they are read.
                let n = r.count(2)?;
                let items = (0..n)
                    .map(|_| Ok((Self::read_at(r, depth + 1)?, Self::read_at(r, depth + 1)?)))
                    .collect::<Result<_>>()?;
                Value::Map(items)
            }
            TENSOR => Value::Tensor(r.varint()?),
            EXT => {
                let kind = r.str()?.to_owned();
                Value::Ext(kind, Box::new(Self::read_at(r, depth + 1)?))
            }
            t => return Err(Error::Format(format!("unknown value tag {t}"))),
        })
    }

    /// Calls `f` on every tensor placeholder index, in order.
    pub fn visit_tensors(&self, f: &mut impl FnMut(u64)) {
        match self {
            Value::Tensor(i) => f(*i),
            Value::List(v) | Value::Tuple(v) => v.iter().for_each(|x| x.visit_tensors(f)),
            Value::Map(kv) => kv.iter().for_each(|(k, v)| {
                k.visit_tensors(f);
                v.visit_tensors(f)
            }),
            Value::Ext(_, v) => v.visit_tensors(f),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            "-?[0-9]{1,40}".prop_map(Value::BigInt),
            any::<u64>().prop_map(|b| Value::Float(f64::from_bits(b))),
            ".*".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
            any::<u64>().prop_map(Value::Tensor),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Tuple),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..8)
                    .prop_map(Value::Map),
                ("[a-z.]{1,12}", inner).prop_map(|(k, v)| Value::Ext(k, Box::new(v))),
            ]
        })
    }

    fn bits_eq(a: &Value, b: &Value) -> bool {
        let (mut wa, mut wb) = (Writer::default(), Writer::default());
        a.write(&mut wa);
        b.write(&mut wb);
        wa.into_inner() == wb.into_inner()
    }

    proptest! {
        #[test]
        fn value_roundtrip(v in arb_value()) {
            let mut w = Writer::default();
            v.write(&mut w);
            let buf = w.into_inner();
            let mut r = Reader::new(&buf);
            let back = Value::read(&mut r).unwrap();
            prop_assert!(bits_eq(&v, &back));
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn value_read_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Value::read(&mut Reader::new(&buf));
        }
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let buf = [LIST, 1].repeat(MAX_DEPTH + 5);
        assert!(matches!(
            Value::read(&mut Reader::new(&buf)),
            Err(Error::Format(_))
        ));
    }
}
