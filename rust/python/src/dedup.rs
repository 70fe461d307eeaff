//! Bindings of the dedup core (signatures, size estimates, the LSH index): buffer and
//! error conversion only.

use fastckpt_core::container::{self, DEFAULT_CHUNK_BYTES};
use fastckpt_core::dedup::{self, estimate, Entry, Index, LshParams};
use fastckpt_core::{DType, Error};
use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::to_py;

fn dtype(py: Python<'_>, name: &str) -> PyResult<DType> {
    DType::from_name(name).map_err(|e| to_py(py, e))
}

fn parse_hash(py: Python<'_>, hex: &str) -> PyResult<u128> {
    u128::from_str_radix(hex, 16)
        .map_err(|_| to_py(py, Error::InvalidArgument(format!("bad hash {hex:?}"))))
}

/// SimHash signature (a 128-bit int) of raw tensor bytes of `dtype`.
#[pyfunction]
fn signature(py: Python<'_>, dtype_name: &str, data: PyReadonlyArray1<'_, u8>) -> PyResult<u128> {
    let (dt, bytes) = (dtype(py, dtype_name)?, data.as_slice()?);
    py.detach(|| dedup::signature(bytes, dt))
        .map_err(|e| to_py(py, e))
}

/// The `raw_hash` (32 hex digits) a file would store for these bytes.
#[pyfunction]
#[pyo3(signature = (dtype_name, data, chunk_bytes=None))]
fn content_hash(
    py: Python<'_>,
    dtype_name: &str,
    data: PyReadonlyArray1<'_, u8>,
    chunk_bytes: Option<usize>,
) -> PyResult<String> {
    let (dt, bytes) = (dtype(py, dtype_name)?, data.as_slice()?);
    let chunk = chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES);
    Ok(format!(
        "{:032x}",
        py.detach(|| container::content_hash(bytes, dt, chunk))
    ))
}

/// Estimated coded bytes of `data` alone, from coding a sample.
#[pyfunction]
fn estimate_standalone(
    py: Python<'_>,
    dtype_name: &str,
    data: PyReadonlyArray1<'_, u8>,
) -> PyResult<u64> {
    let (dt, bytes) = (dtype(py, dtype_name)?, data.as_slice()?);
    py.detach(|| estimate::standalone(bytes, dt))
        .map_err(|e| to_py(py, e))
}

/// Estimated coded bytes of `data` predicted from `reference` (0 for an exact copy).
#[pyfunction]
fn estimate_predicted(
    py: Python<'_>,
    dtype_name: &str,
    data: PyReadonlyArray1<'_, u8>,
    reference: PyReadonlyArray1<'_, u8>,
) -> PyResult<u64> {
    let dt = dtype(py, dtype_name)?;
    let (bytes, rf) = (data.as_slice()?, reference.as_slice()?);
    py.detach(|| estimate::predicted(bytes, rf, dt))
        .map_err(|e| to_py(py, e))
}

/// (checkpoint, tensor, dtype, numel, raw_hash hex, signature) of one index entry.
type EntryArg = (String, String, String, u64, String, u128);

/// The LSH index of a Store (see `fastckpt_core::dedup::index`).
#[pyclass(module = "fastckpt._core")]
struct LshIndex {
    index: Index,
}

impl LshIndex {
    fn entry(py: Python<'_>, e: EntryArg) -> PyResult<Entry> {
        Ok(Entry {
            checkpoint: e.0,
            tensor: e.1,
            dtype: dtype(py, &e.2)?,
            numel: e.3,
            raw_hash: parse_hash(py, &e.4)?,
            signature: e.5,
        })
    }

    fn names(&self, id: u32) -> (String, String) {
        self.index
            .entry(id)
            .map(|e| (e.checkpoint, e.tensor))
            .unwrap_or_default()
    }
}

#[pymethods]
impl LshIndex {
    #[new]
    #[pyo3(signature = (bands=None, rows=None))]
    fn new(py: Python<'_>, bands: Option<u32>, rows: Option<u32>) -> PyResult<Self> {
        let d = LshParams::default();
        let params = LshParams {
            bands: bands.unwrap_or(d.bands),
            rows: rows.unwrap_or(d.rows),
        };
        let index = Index::new(params).map_err(|e| to_py(py, e))?;
        Ok(LshIndex { index })
    }

    /// Parses a serialized index (damage raises FormatError / CorruptCheckpoint).
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let index = py
            .detach(|| Index::from_bytes(data))
            .map_err(|e| to_py(py, e))?;
        Ok(LshIndex { index })
    }

    /// The serialized index.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.index.to_bytes())
    }

    /// (bands, rows).
    fn params(&self) -> (u32, u32) {
        let p = self.index.params();
        (p.bands, p.rows)
    }

    /// Probability that a pair with cosine `cos` shares a band (the S-curve).
    fn collision(&self, cos: f64) -> f64 {
        self.index.params().collision(cos)
    }

    fn __len__(&self) -> usize {
        self.index.len()
    }

    /// Approximate heap bytes held by the index.
    fn memory_bytes(&self) -> usize {
        self.index.memory_bytes()
    }

    /// Adds entries `(checkpoint, tensor, dtype, numel, raw_hash, signature)`.
    fn extend(&mut self, py: Python<'_>, entries: Vec<EntryArg>) -> PyResult<()> {
        let list = entries
            .into_iter()
            .map(|e| LshIndex::entry(py, e))
            .collect::<PyResult<Vec<_>>>()?;
        if list.len() == 1 {
            let e = list.into_iter().next().expect("one entry");
            return self.index.insert(e).map(|_| ()).map_err(|e| to_py(py, e));
        }
        self.index.extend(list).map_err(|e| to_py(py, e))
    }

    /// Removes a checkpoint's entries; returns how many.
    fn remove_checkpoint(&mut self, py: Python<'_>, checkpoint: &str) -> PyResult<usize> {
        self.index
            .remove_checkpoint(checkpoint)
            .map_err(|e| to_py(py, e))
    }

    /// (checkpoint, tensor) of every entry with exactly this content.
    fn exact(
        &self,
        py: Python<'_>,
        dtype_name: &str,
        numel: u64,
        raw_hash: &str,
    ) -> PyResult<Vec<(String, String)>> {
        let (dt, h) = (dtype(py, dtype_name)?, parse_hash(py, raw_hash)?);
        Ok(self
            .index
            .exact(dt, numel, h)
            .into_iter()
            .map(|id| self.names(id))
            .collect())
    }

    /// Up to `limit` candidates `(checkpoint, tensor, hamming distance)`, nearest first.
    fn query(
        &self,
        py: Python<'_>,
        dtype_name: &str,
        numel: u64,
        signature: u128,
        limit: usize,
    ) -> PyResult<Vec<(String, String, u32)>> {
        let dt = dtype(py, dtype_name)?;
        let found = py.detach(|| self.index.query(dt, numel, signature, limit));
        Ok(found
            .into_iter()
            .map(|c| {
                let (ck, t) = self.names(c.id);
                (ck, t, c.distance)
            })
            .collect())
    }
}

/// Registers the dedup bindings in the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LshIndex>()?;
    m.add_function(wrap_pyfunction!(signature, m)?)?;
    m.add_function(wrap_pyfunction!(content_hash, m)?)?;
    m.add_function(wrap_pyfunction!(estimate_standalone, m)?)?;
    m.add_function(wrap_pyfunction!(estimate_predicted, m)?)?;
    Ok(())
}
