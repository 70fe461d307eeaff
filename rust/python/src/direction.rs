//! Bindings of the Adam-direction reference ([`fastckpt_core::predict::direction`]):
//! buffer and error conversion only.

use fastckpt_core::parallel;
use fastckpt_core::predict::direction;
use numpy::{PyReadonlyArray1, PyReadwriteArray1};
use pyo3::prelude::*;

use crate::to_py;

/// `(step, r2)`: the least-squares step of `w1 - w0` on `m / (sqrt(v) + eps)` and the
/// share of the change it explains (raw float32 bytes, equal lengths), over about
/// `sample_words` words in evenly spaced blocks, or all.
#[pyfunction]
#[pyo3(signature = (w0, w1, m, v, sample_words=None, threads=None))]
fn direction_fit(
    py: Python<'_>,
    w0: PyReadonlyArray1<'_, u8>,
    w1: PyReadonlyArray1<'_, u8>,
    m: PyReadonlyArray1<'_, u8>,
    v: PyReadonlyArray1<'_, u8>,
    sample_words: Option<usize>,
    threads: Option<usize>,
) -> PyResult<(f64, f64)> {
    let (w0, w1, m, v) = (w0.as_slice()?, w1.as_slice()?, m.as_slice()?, v.as_slice()?);
    py.detach(|| {
        let f = parallel::install(threads, || direction::fit(w0, w1, m, v, sample_words))??;
        Ok((f.step, f.r2))
    })
    .map_err(|e| to_py(py, e))
}

/// Writes the Adam-direction prediction `w0 + step * m / (sqrt(v) + eps)` into `out`
/// (raw float32 bytes, equal lengths), bit-identical on every machine.
#[pyfunction]
#[pyo3(signature = (w0, m, v, step, out, threads=None))]
fn direction_predict(
    py: Python<'_>,
    w0: PyReadonlyArray1<'_, u8>,
    m: PyReadonlyArray1<'_, u8>,
    v: PyReadonlyArray1<'_, u8>,
    step: f64,
    mut out: PyReadwriteArray1<'_, u8>,
    threads: Option<usize>,
) -> PyResult<()> {
    let (w0, m, v) = (w0.as_slice()?, m.as_slice()?, v.as_slice()?);
    let out = out.as_slice_mut()?;
    py.detach(|| parallel::install(threads, || direction::predict(w0, m, v, step, out))?)
        .map_err(|e| to_py(py, e))
}

/// Adds this module's functions to `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(direction_fit, m)?)?;
    m.add_function(wrap_pyfunction!(direction_predict, m)?)?;
    m.add("DIRECTION_EPS", direction::EPS)?;
    m.add(
        "DIRECTION_STEPS",
        (direction::MIN_STEP, direction::MAX_STEP),
    )?;
    Ok(())
}
