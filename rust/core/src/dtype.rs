//! Element types a checkpoint can hold, and how each is cut into coder words.

use crate::error::{Error, Result};

/// A tensor element type. The discriminant is the on-disk code: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum DType {
    Bool = 1,
    U8 = 2,
    I8 = 3,
    U16 = 4,
    I16 = 5,
    U32 = 6,
    I32 = 7,
    U64 = 8,
    I64 = 9,
    F16 = 10,
    BF16 = 11,
    F32 = 12,
    F64 = 13,
    F8E4M3 = 14,
    F8E5M2 = 15,
    C64 = 16,
    C128 = 17,
}

const ALL: [DType; 17] = [
    DType::Bool,
    DType::U8,
    DType::I8,
    DType::U16,
    DType::I16,
    DType::U32,
    DType::I32,
    DType::U64,
    DType::I64,
    DType::F16,
    DType::BF16,
    DType::F32,
    DType::F64,
    DType::F8E4M3,
    DType::F8E5M2,
    DType::C64,
    DType::C128,
];

impl DType {
    /// Every supported dtype.
    pub fn all() -> &'static [DType] {
        &ALL
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        use DType::*;
        match self {
            Bool | U8 | I8 | F8E4M3 | F8E5M2 => 1,
            U16 | I16 | F16 | BF16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | C64 => 8,
            C128 => 16,
        }
    }

    /// Size of one coder word: the unit split into byte planes (a complex is two floats).
    pub fn word_size(self) -> usize {
        match self {
            DType::C64 => 4,
            DType::C128 => 8,
            other => other.size(),
        }
    }

    /// Whether words are IEEE-like floats whose sign bit is rotated below the exponent,
    /// so that the exponent fills the top byte plane.
    pub fn is_float(self) -> bool {
        use DType::*;
        matches!(self, F16 | BF16 | F32 | F64 | C64 | C128)
    }

    /// Canonical name (torch spelling without the `torch.` prefix).
    pub fn name(self) -> &'static str {
        use DType::*;
        match self {
            Bool => "bool",
            U8 => "uint8",
            I8 => "int8",
            U16 => "uint16",
            I16 => "int16",
            U32 => "uint32",
            I32 => "int32",
            U64 => "uint64",
            I64 => "int64",
            F16 => "float16",
            BF16 => "bfloat16",
            F32 => "float32",
            F64 => "float64",
            F8E4M3 => "float8_e4m3fn",
            F8E5M2 => "float8_e5m2",
            C64 => "complex64",
            C128 => "complex128",
        }
    }

    /// Parses a canonical name (see [`DType::name`]).
    pub fn from_name(name: &str) -> Result<DType> {
        ALL.iter()
            .copied()
            .find(|d| d.name() == name)
            .ok_or_else(|| Error::Unsupported(format!("dtype {name:?}")))
    }

    /// Parses an on-disk code.
    pub fn from_code(code: u8) -> Result<DType> {
        ALL.iter()
            .copied()
            .find(|d| *d as u8 == code)
            .ok_or_else(|| Error::Format(format!("unknown dtype code {code}")))
    }
}
