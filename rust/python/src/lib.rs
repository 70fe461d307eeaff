//! Python bindings for fastckpt-core. This crate converts buffers, structures and errors;
//! all logic lives in the core. The GIL is released around every coding call.

mod arrays;
mod dedup;
mod direction;

use fastckpt_core::{
    container::format::Direction, container::DEFAULT_CHUNK_BYTES, AdamIn, Checkpoint, DType,
    EncodeOptions, Error, Header, LossySpec, RefBytes, RefIn, TensorIn, Value,
};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::exceptions::{PyKeyError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// Placeholder for tensor `index` inside a checkpoint structure.
#[pyclass(module = "fastckpt._core", frozen, eq)]
#[derive(PartialEq)]
struct TensorRef {
    #[pyo3(get)]
    index: u64,
}

#[pymethods]
impl TensorRef {
    #[new]
    fn new(index: u64) -> Self {
        TensorRef { index }
    }
    fn __repr__(&self) -> String {
        format!("TensorRef({})", self.index)
    }
}

/// A host-specific value (e.g. kind "torch.dtype", value "float32") the Python layer rebuilds.
#[pyclass(module = "fastckpt._core", frozen)]
struct Ext {
    #[pyo3(get)]
    kind: String,
    #[pyo3(get)]
    value: Py<PyAny>,
}

#[pymethods]
impl Ext {
    #[new]
    fn new(kind: String, value: Py<PyAny>) -> Self {
        Ext { kind, value }
    }
    fn __repr__(&self) -> String {
        format!("Ext({:?}, ...)", self.kind)
    }
}

/// A reusable page-aligned byte buffer from the core's pool (`fastckpt_core::pool`),
/// seen by numpy through `__array_interface__`: the array keeps it alive, and its memory
/// goes back to the pool when the last array or tensor over it is gone.
#[pyclass(module = "fastckpt._core", frozen)]
struct Buffer {
    ptr: usize,
    len: usize,
    _owned: fastckpt_core::pool::Buffer,
}

#[pymethods]
impl Buffer {
    #[new]
    fn new(len: usize) -> PyResult<Self> {
        let mut owned = fastckpt_core::pool::Buffer::new(len).ok_or_else(|| {
            pyo3::exceptions::PyMemoryError::new_err(format!("cannot map {len} bytes"))
        })?;
        Ok(Buffer {
            ptr: owned.as_mut_ptr() as usize,
            len,
            _owned: owned,
        })
    }

    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("shape", (self.len,))?;
        d.set_item("typestr", "|u1")?;
        d.set_item("data", (self.ptr, false))?;
        d.set_item("version", 3)?;
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.len
    }
}

/// Sets the cap on unused pooled buffer bytes (0 releases them all); returns the old cap.
#[pyfunction]
fn set_pool_limit(py: Python<'_>, nbytes: usize) -> usize {
    py.detach(|| fastckpt_core::pool::set_limit(nbytes))
}

/// The cap on unused pooled buffer bytes (0: pooling is off).
#[pyfunction]
fn pool_limit() -> usize {
    fastckpt_core::pool::limit()
}

/// Bytes of unused buffers the pool holds now.
#[pyfunction]
fn pooled_bytes() -> usize {
    fastckpt_core::pool::pooled_bytes()
}

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The one mapping from core errors to the Python exceptions of `fastckpt.errors`.
pub(crate) fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let class = match &e {
        Error::NotFastckpt(_) | Error::Version { .. } | Error::Format(_) => "FormatError",
        Error::Truncated(_) | Error::Checksum(_) | Error::Corrupt(_) => "CorruptCheckpoint",
        Error::Unsupported(_) => "UnsupportedError",
        Error::InvalidArgument(_) => return PyValueError::new_err(e.to_string()),
        Error::Reference(_) => "ReferenceMismatch",
        Error::NotFound(_) => return PyKeyError::new_err(e.to_string()),
    };
    let module =
        ERRORS.get_or_try_init(py, || PyResult::Ok(py.import("fastckpt.errors")?.unbind()));
    match module.and_then(|m| m.bind(py).getattr(class)) {
        Ok(cls) => PyErr::from_value(
            cls.call1((e.to_string(),))
                .unwrap_or_else(|err| err.into_value(py).into_bound(py).into_any()),
        ),
        Err(err) => err,
    }
}

fn unsupported(py: Python<'_>, what: String) -> PyErr {
    to_py(py, Error::Unsupported(what))
}

/// Converts a Python structure (plain values, TensorRef, Ext) into a core [`Value`].
fn to_value(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    let py = obj.py();
    if depth > fastckpt_core::container::value::MAX_DEPTH {
        return Err(unsupported(py, "structure nested too deeply".into()));
    }
    if obj.is_none() {
        return Ok(Value::None);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        return Ok(match obj.extract::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(obj.str()?.to_string()),
        });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        let text = s
            .to_cow()
            .map_err(|e| unsupported(py, format!("string is not valid UTF-8: {e}")))?;
        return Ok(Value::Str(text.into_owned()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return Ok(Value::List(
            l.iter()
                .map(|x| to_value(&x, depth + 1))
                .collect::<PyResult<_>>()?,
        ));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return Ok(Value::Tuple(
            t.iter()
                .map(|x| to_value(&x, depth + 1))
                .collect::<PyResult<_>>()?,
        ));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut items = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            items.push((to_value(&k, depth + 1)?, to_value(&v, depth + 1)?));
        }
        return Ok(Value::Map(items));
    }
    if let Ok(r) = obj.cast::<TensorRef>() {
        return Ok(Value::Tensor(r.get().index));
    }
    if let Ok(e) = obj.cast::<Ext>() {
        let e = e.get();
        return Ok(Value::Ext(
            e.kind.clone(),
            Box::new(to_value(e.value.bind(py), depth + 1)?),
        ));
    }
    let ty = obj.get_type().name()?.to_string();
    Err(unsupported(
        py,
        format!("cannot store a value of type {ty}"),
    ))
}

/// Converts a core [`Value`] back into Python objects (TensorRef and Ext left for Python).
fn from_value(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::None => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::BigInt(s) => py.get_type::<PyInt>().call1((s.as_str(),))?.unbind(),
        Value::Float(f) => PyFloat::new(py, *f).into_any().unbind(),
        Value::Str(s) => PyString::new(py, s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any().unbind(),
        Value::List(items) => {
            let l = PyList::empty(py);
            for x in items {
                l.append(from_value(py, x)?)?;
            }
            l.into_any().unbind()
        }
        Value::Tuple(items) => {
            let xs = items
                .iter()
                .map(|x| from_value(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, xs)?.into_any().unbind()
        }
        Value::Map(items) => {
            let d = PyDict::new(py);
            for (k, x) in items {
                d.set_item(from_value(py, k)?, from_value(py, x)?)?;
            }
            d.into_any().unbind()
        }
        Value::Tensor(i) => Py::new(py, TensorRef { index: *i })?.into_any(),
        Value::Ext(kind, x) => Py::new(
            py,
            Ext {
                kind: kind.clone(),
                value: from_value(py, x)?,
            },
        )?
        .into_any(),
    })
}

/// The slices of optional copy buffers, one per item of `n` (an empty list: none).
fn copy_slices<'a>(
    copies: &'a mut Vec<Option<PyReadwriteArray1<'_, u8>>>,
    n: usize,
) -> PyResult<Vec<Option<&'a mut [u8]>>> {
    if !copies.is_empty() && copies.len() != n {
        return Err(PyValueError::new_err(format!(
            "{} copy buffers for {n} tensors",
            copies.len()
        )));
    }
    copies.resize_with(n, || None);
    Ok(copies
        .iter_mut()
        .map(|c| c.as_mut().map(|c| c.as_slice_mut()).transpose())
        .collect::<Result<Vec<_>, _>>()?)
}

type TensorArg<'py> = (String, String, Vec<u64>, String, PyReadonlyArray1<'py, u8>);
/// (checkpoint id, tensor name, raw bytes) of a reference tensor.
type RefArg<'py> = (String, String, PyReadonlyArray1<'py, u8>);
/// (first moment name, second moment name, step, first moment's raw bytes, second
/// moment's raw bytes) of an Adam-direction reference.
type DirectionArg<'py> = (
    String,
    String,
    f64,
    PyReadonlyArray1<'py, u8>,
    PyReadonlyArray1<'py, u8>,
);

/// A decoder's reference: the reference tensor's raw bytes, or `(raw bytes, m, v)` with
/// the raw moments of a tensor that has an Adam-direction reference.
#[derive(FromPyObject)]
enum DecodeRef<'py> {
    Adam(
        (
            PyReadonlyArray1<'py, u8>,
            PyReadonlyArray1<'py, u8>,
            PyReadonlyArray1<'py, u8>,
        ),
    ),
    Raw(PyReadonlyArray1<'py, u8>),
}

impl DecodeRef<'_> {
    /// The core's view of the reference.
    fn bytes(&self) -> PyResult<RefBytes<'_>> {
        Ok(match self {
            DecodeRef::Raw(r) => RefBytes::from(r.as_slice()?),
            DecodeRef::Adam((w, m, v)) => RefBytes {
                data: w.as_slice()?,
                moments: Some((m.as_slice()?, v.as_slice()?)),
            },
        })
    }
}
/// (class, error bound, prune fraction, non-negative, relative bound) of a near-lossless
/// tensor.
type LossyArg = (String, f64, f64, bool, bool);

/// Encodes tensors `(name, dtype, shape, tag, uint8 array)` and a structure; `references`
/// optionally pairs each tensor with a `(checkpoint, name, uint8 array)` to predict from,
/// `lossy` with a `(class, error_bound, prune, nonneg)` near-lossless spec, `sides` with
/// the index of a sibling tensor whose words give a predicted tensor its contexts,
/// `directions` with the `(m name, v name, step, m bytes, v bytes)` of an Adam-direction
/// reference (the tensor is coded against `direction_predict` of its reference and
/// these moments, made chunk by chunk), `copies` with a uint8 array that receives a copy
/// of the tensor's bytes.
/// Returns the file as bytes, or writes it to `path` (fsynced) and returns None.
#[pyfunction]
#[pyo3(signature = (tensors, structure, threads=None, chunk_bytes=None, path=None, references=None,
                    lossy=None, sparse_block=None, sides=None, copies=None, directions=None))]
#[allow(clippy::too_many_arguments)]
fn encode(
    py: Python<'_>,
    tensors: Vec<TensorArg<'_>>,
    structure: &Bound<'_, PyAny>,
    threads: Option<usize>,
    chunk_bytes: Option<usize>,
    path: Option<std::path::PathBuf>,
    references: Option<Vec<Option<RefArg<'_>>>>,
    lossy: Option<Vec<Option<LossyArg>>>,
    sparse_block: Option<u32>,
    sides: Option<Vec<Option<usize>>>,
    copies: Option<Vec<Option<PyReadwriteArray1<'_, u8>>>>,
    directions: Option<Vec<Option<DirectionArg<'_>>>>,
) -> PyResult<Option<Py<PyBytes>>> {
    let structure = to_value(structure, 0)?;
    let references = references.unwrap_or_default();
    let lossy = lossy.unwrap_or_default();
    let sides = sides.unwrap_or_default();
    let directions = directions.unwrap_or_default();
    let paired = |n: usize| n == 0 || n == tensors.len();
    if ![references.len(), lossy.len(), sides.len(), directions.len()]
        .into_iter()
        .all(paired)
    {
        return Err(PyValueError::new_err(
            "references, lossy, sides and directions must pair one-to-one with tensors",
        ));
    }
    let mut inputs = Vec::with_capacity(tensors.len());
    for (k, (name, dtype, shape, tag, arr)) in tensors.iter().enumerate() {
        let dtype = DType::from_name(dtype).map_err(|e| to_py(py, e))?;
        let data = arr.as_slice()?;
        let reference = match references.get(k) {
            Some(Some((checkpoint, tensor, r))) => Some(RefIn {
                checkpoint: checkpoint.clone(),
                tensor: tensor.clone(),
                data: r.as_slice()?,
                direction: match directions.get(k) {
                    Some(Some((m, v, step, m_raw, v_raw))) => Some(AdamIn {
                        recorded: Direction {
                            m: m.clone(),
                            v: v.clone(),
                            step: *step,
                        },
                        m: m_raw.as_slice()?,
                        v: v_raw.as_slice()?,
                    }),
                    _ => None,
                },
            }),
            _ => None,
        };
        inputs.push(TensorIn {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
            tag: tag.clone(),
            data,
            reference,
            lossy: lossy.get(k).cloned().flatten().map(
                |(class, error_bound, prune, nonneg, relative)| LossySpec {
                    class,
                    error_bound,
                    prune,
                    nonneg,
                    relative,
                },
            ),
            side: sides.get(k).copied().flatten(),
        });
    }
    let mut opts = EncodeOptions {
        threads,
        chunk_bytes: chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES),
        ..EncodeOptions::default()
    };
    if let Some(b) = sparse_block {
        if b == 0 || b > fastckpt_core::quant::MAX_BLOCK {
            return Err(PyValueError::new_err("sparse_block out of range"));
        }
        opts.sparse_block = b;
    }
    let mut copies = copies.unwrap_or_default();
    let copy_bufs = copy_slices(&mut copies, tensors.len())?;
    let encoded = py
        .detach(|| fastckpt_core::encode_copied(&inputs, &structure, &opts, copy_bufs))
        .map_err(|e| to_py(py, e))?;
    match path {
        Some(p) => {
            // The writer runs in the pool of `threads` (one thread: no writer thread).
            py.detach(|| {
                let file = std::fs::File::create(&p)?;
                fastckpt_core::parallel::install(threads, || encoded.write_durable(&file))
                    .map_err(std::io::Error::other)?
            })
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
            Ok(None)
        }
        None => Ok(Some(new_bytes(py, &encoded, threads)?)),
    }
}

/// A `bytes` object holding the encoded file. Built from an uninitialized buffer (pyo3's
/// `PyBytes::new_with` zeroes it first, which faults in every page before the copy).
fn new_bytes(
    py: Python<'_>,
    encoded: &fastckpt_core::Encoded,
    threads: Option<usize>,
) -> PyResult<Py<PyBytes>> {
    let len = encoded.len();
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| PyValueError::new_err("encoded checkpoint too large for bytes"))?;
    // SAFETY: a NULL source asks CPython for an uninitialized bytes object of `size` bytes;
    // a NULL result means a Python exception is set.
    let obj = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
    if obj.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `obj` is a new, owned reference to a bytes object.
    let bytes: Bound<'_, PyBytes> = unsafe { Bound::from_owned_ptr(py, obj).cast_into_unchecked() };
    // SAFETY: the object is fresh and not shared yet, so writing its `len` buffer bytes
    // (uninitialized until `write_uninit` fills every one of them) is sound.
    let buf = unsafe {
        let data = pyo3::ffi::PyBytes_AsString(bytes.as_ptr()) as *mut std::mem::MaybeUninit<u8>;
        std::slice::from_raw_parts_mut(data, len)
    };
    py.detach(|| fastckpt_core::parallel::install(threads, || encoded.write_uninit(buf)))
        .map_err(|e| to_py(py, e))?;
    Ok(bytes.unbind())
}

/// A parsed checkpoint over a uint8 array: the index and structure, and decoding into
/// caller-allocated buffers.
#[pyclass(module = "fastckpt._core")]
struct Reader {
    data: Py<PyArray1<u8>>,
    header: Header,
}

#[pymethods]
impl Reader {
    #[new]
    fn new(py: Python<'_>, data: PyReadonlyArray1<'_, u8>) -> PyResult<Self> {
        let header = {
            let bytes = data.as_slice()?;
            py.detach(|| Header::parse(bytes).map(|(header, _data)| header))
                .map_err(|e| to_py(py, e))?
        };
        Ok(Reader {
            data: data.as_unbound().clone_ref(py),
            header,
        })
    }

    /// The checkpoint's structure with TensorRef / Ext placeholders.
    fn structure(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        from_value(py, &self.header.structure)
    }

    /// What decoding needs of each tensor, as one tuple per tensor (cheaper to build than
    /// `tensors()`'s dicts): `(name, dtype, shape, tag, reference, side, lossy,
    /// direction)`, with `reference` `(checkpoint, tensor)` or None, `side` the side
    /// tensor's name or None and `direction` an Adam-direction reference's `(m, v, step)`
    /// or None.
    #[allow(clippy::type_complexity)]
    fn specs<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<
        Vec<(
            &str,
            &str,
            Bound<'py, PyTuple>,
            &str,
            Option<(&str, &str)>,
            Option<&str>,
            bool,
            Option<(String, String, f64)>,
        )>,
    > {
        self.header
            .tensors
            .iter()
            .map(|t| {
                Ok((
                    t.name.as_str(),
                    t.dtype.name(),
                    PyTuple::new(py, &t.shape)?,
                    t.tag.as_str(),
                    t.reference
                        .as_ref()
                        .map(|r| (r.checkpoint.as_str(), r.tensor.as_str())),
                    t.side(),
                    t.is_lossy(),
                    t.direction().map(|d| (d.m, d.v, d.step)),
                ))
            })
            .collect()
    }

    /// One dict per tensor: name, dtype, shape, tag, codec, raw/compressed bytes, chunks.
    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.header
            .tensors
            .iter()
            .map(|t| {
                let d = PyDict::new(py);
                d.set_item("name", &t.name)?;
                d.set_item("dtype", t.dtype.name())?;
                d.set_item("shape", PyTuple::new(py, &t.shape)?)?;
                d.set_item("tag", &t.tag)?;
                d.set_item("codec", t.codec.name())?;
                d.set_item("lossy", t.is_lossy())?;
                d.set_item("params", from_value(py, &t.params)?)?;
                d.set_item("side", t.side())?;
                d.set_item("direction", t.direction().map(|d| (d.m, d.v, d.step)))?;
                match &t.reference {
                    Some(r) => {
                        let rd = PyDict::new(py);
                        rd.set_item("checkpoint", &r.checkpoint)?;
                        rd.set_item("tensor", &r.tensor)?;
                        d.set_item("reference", rd)?;
                    }
                    None => d.set_item("reference", py.None())?,
                }
                d.set_item("raw_bytes", t.raw_bytes())?;
                d.set_item("compressed_bytes", t.compressed_bytes())?;
                d.set_item("chunks", t.chunks.len())?;
                d.set_item("raw_hash", format!("{:032x}", t.raw_hash))?;
                Ok(d)
            })
            .collect()
    }

    /// Decodes tensors `indices[k]` into the uint8 arrays `outputs[k]` (exact raw sizes);
    /// `references[k]`, when given, is the raw reference of a predicted tensor (with an
    /// Adam-direction reference, the tuple `(raw reference, raw m, raw v)`);
    /// `copies[k]`, when given, receives a second copy of the decoded bytes; `trusted`
    /// skips hashing the references even when a chunk fails (see `trust_references`).
    #[pyo3(signature = (indices, outputs, threads=None, references=None, copies=None, trusted=false))]
    #[allow(clippy::too_many_arguments)]
    fn decode_into(
        &self,
        py: Python<'_>,
        indices: Vec<usize>,
        mut outputs: Vec<PyReadwriteArray1<'_, u8>>,
        threads: Option<usize>,
        references: Option<Vec<Option<DecodeRef<'_>>>>,
        copies: Option<Vec<Option<PyReadwriteArray1<'_, u8>>>>,
        trusted: bool,
    ) -> PyResult<()> {
        let references = references.unwrap_or_default();
        if indices.len() != outputs.len()
            || (!references.is_empty() && references.len() != indices.len())
        {
            return Err(PyValueError::new_err(
                "indices, outputs and references differ in length",
            ));
        }
        let mut copies = copies.unwrap_or_default();
        let copy_bufs = copy_slices(&mut copies, indices.len())?;
        let data = self.data.bind(py).readonly();
        let bytes = data.as_slice()?;
        let mut jobs = Vec::with_capacity(outputs.len());
        for (k, (i, out)) in indices.into_iter().zip(outputs.iter_mut()).enumerate() {
            let reference = match references.get(k) {
                Some(Some(r)) => Some(r.bytes()?),
                _ => None,
            };
            jobs.push((i, out.as_slice_mut()?, reference));
        }
        let header = &self.header;
        py.detach(|| checkpoint(header, bytes, trusted)?.decode_copied(jobs, copy_bufs, threads))
            .map_err(|e| to_py(py, e))
    }

    /// Decodes tensors `indices[k]` into new arrays, returned in that order: C-contiguous,
    /// of the tensor's shape and numpy dtype (int16 holding bfloat16, uint8 holding the
    /// 8-bit floats), large ones in pooled buffers. `references` and `trusted` as in
    /// `decode_into`.
    #[pyo3(signature = (indices, threads=None, references=None, trusted=false))]
    fn decode_arrays<'py>(
        &self,
        py: Python<'py>,
        indices: Vec<usize>,
        threads: Option<usize>,
        references: Option<Vec<Option<DecodeRef<'py>>>>,
        trusted: bool,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let references = references.unwrap_or_default();
        if !references.is_empty() && references.len() != indices.len() {
            return Err(PyValueError::new_err(
                "indices and references differ in length",
            ));
        }
        let mut descrs: Vec<(DType, Bound<'py, numpy::PyArrayDescr>)> = Vec::new();
        let (mut arrays, mut jobs) = (Vec::with_capacity(indices.len()), Vec::new());
        for (k, &i) in indices.iter().enumerate() {
            let t = self
                .header
                .tensors
                .get(i)
                .ok_or_else(|| to_py(py, Error::NotFound(format!("tensor index {i}"))))?;
            let descr = match descrs.iter().find(|(d, _)| *d == t.dtype) {
                Some((_, descr)) => descr.clone(),
                None => {
                    let descr = numpy::PyArrayDescr::new(py, arrays::storage_name(t.dtype))?;
                    descrs.push((t.dtype, descr.clone()));
                    descr
                }
            };
            let nbytes = usize::try_from(t.raw_bytes())
                .map_err(|_| PyValueError::new_err("tensor too large for memory"))?;
            let (arr, ptr) = arrays::fresh(py, &descr, &t.shape, nbytes)?;
            let out: &mut [u8] = if nbytes == 0 {
                &mut []
            } else {
                // SAFETY: `arr` is fresh and not yet seen by Python; its data is `nbytes`
                // long (and so not NULL).
                unsafe { std::slice::from_raw_parts_mut(ptr, nbytes) }
            };
            let reference = match references.get(k) {
                Some(Some(r)) => Some(r.bytes()?),
                _ => None,
            };
            jobs.push((i, out, reference));
            arrays.push(arr);
        }
        let data = self.data.bind(py).readonly();
        let bytes = data.as_slice()?;
        let header = &self.header;
        let copies = (0..jobs.len()).map(|_| None).collect();
        py.detach(|| checkpoint(header, bytes, trusted)?.decode_copied(jobs, copies, threads))
            .map_err(|e| to_py(py, e))?;
        Ok(arrays)
    }
}

/// The checkpoint of `bytes` over the header a [`Reader`] parsed from them; `trusted`
/// skips hashing references when a chunk fails.
fn checkpoint<'a>(
    header: &'a Header,
    bytes: &'a [u8],
    trusted: bool,
) -> Result<Checkpoint<'a>, Error> {
    let ck = Checkpoint::with_header(header, bytes)?;
    Ok(if trusted { ck.trust_references() } else { ck })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TensorRef>()?;
    m.add_class::<Ext>()?;
    m.add_class::<Reader>()?;
    m.add_class::<Buffer>()?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(set_pool_limit, m)?)?;
    m.add_function(wrap_pyfunction!(pooled_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(pool_limit, m)?)?;
    m.add("POOL_MIN_BYTES", fastckpt_core::pool::MIN_BYTES)?;
    m.add(
        "MIN_PREDICTED_WORDS",
        fastckpt_core::container::MIN_PREDICTED_WORDS,
    )?;
    dedup::register(m)?;
    direction::register(m)?;
    m.add("FORMAT_VERSION", fastckpt_core::container::format::MAJOR)?;
    m.add("FORMAT_MINOR", fastckpt_core::container::format::MINOR)?;
    m.add(
        "DTYPES",
        DType::all().iter().map(|d| d.name()).collect::<Vec<_>>(),
    )?;
    Ok(())
}
