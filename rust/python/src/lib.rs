use numpy::PyReadonlyArray1;
use pyo3::prelude::*;

#[pyfunction]
fn total(a: PyReadonlyArray1<u8>) -> PyResult<u64> {
    Ok(a.as_slice()?.iter().map(|&x| x as u64).sum())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(total, m)?)?;
    Ok(())
}
