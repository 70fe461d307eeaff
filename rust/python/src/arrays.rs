//! Fresh numpy arrays for decoded tensors, made here in one call instead of one Python
//! allocation, view and reshape per tensor (on MiniLM's 104 tensors that was ~0.6 ms of a
//! 14 ms decode). Large arrays live in buffers of the core's pool, as `_memory.fresh`
//! gives them; small ones come from numpy's allocator.

use fastckpt_core::DType;
use numpy::npyffi::{self, npy_intp, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyArrayDescrMethods};
use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;

use crate::Buffer;

/// The numpy dtype an array of `dtype` holds its words as: the dtype itself where numpy
/// has it, a same-width integer for bfloat16 and the 8-bit floats (the Python layer
/// reinterprets it as torch's or ml_dtypes' type).
pub(crate) fn storage_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "int16",
        DType::F8E4M3 | DType::F8E5M2 => "uint8",
        d => d.name(),
    }
}

/// An uninitialized C-contiguous writable array of `shape` and numpy dtype `descr`
/// holding `nbytes`, with a pointer to its data. The caller must fill all `nbytes`
/// before any Python code sees the array.
pub(crate) fn fresh<'py>(
    py: Python<'py>,
    descr: &Bound<'py, PyArrayDescr>,
    shape: &[u64],
    nbytes: usize,
) -> PyResult<(Bound<'py, PyAny>, *mut u8)> {
    let mut dims = shape
        .iter()
        .map(|&d| npy_intp::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PyValueError::new_err("tensor dimension too large"))?;
    let bytes = shape
        .iter()
        .try_fold(descr.itemsize() as u64, |n, &d| n.checked_mul(d));
    if bytes != Some(nbytes as u64) {
        return Err(PyValueError::new_err(format!(
            "{nbytes} bytes do not make an array of shape {shape:?} and itemsize {}",
            descr.itemsize()
        )));
    }
    let pooled = nbytes >= fastckpt_core::pool::MIN_BYTES && fastckpt_core::pool::limit() > 0;
    let owner = if pooled {
        Some(Bound::new(py, Buffer::new(nbytes)?)?)
    } else {
        None
    };
    let data = owner.as_ref().map_or(std::ptr::null_mut(), |b| {
        b.get().ptr as *mut std::ffi::c_void
    });
    // SAFETY: the API call gets a new reference to `descr` (it steals one), dims of the
    // array's rank, and either NULL (numpy allocates) or a pooled buffer of `nbytes`,
    // which `owner` keeps alive and becomes the array's base below.
    let arr = unsafe {
        PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type),
            descr.clone().into_dtype_ptr(),
            dims.len() as std::ffi::c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            data,
            // With no data, numpy reads any nonzero flags as "Fortran order".
            if data.is_null() {
                0
            } else {
                npyffi::NPY_ARRAY_CARRAY
            },
            std::ptr::null_mut(),
        )
    };
    if arr.is_null() {
        return Err(PyErr::take(py).unwrap_or_else(|| PyMemoryError::new_err("numpy array")));
    }
    // SAFETY: `arr` is a new, owned reference to an ndarray.
    let arr = unsafe { Bound::from_owned_ptr(py, arr) };
    if let Some(owner) = owner {
        // SAFETY: sets the base of a fresh array we own; steals the reference we pass.
        let rc = unsafe {
            PY_ARRAY_API.PyArray_SetBaseObject(
                py,
                arr.as_ptr() as *mut npyffi::PyArrayObject,
                owner.into_ptr(),
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(py));
        }
    }
    // SAFETY: `arr` is an ndarray; its data pointer covers its `nbytes`.
    let ptr = unsafe { (*(arr.as_ptr() as *mut npyffi::PyArrayObject)).fields.data as *mut u8 };
    Ok((arr, ptr))
}
