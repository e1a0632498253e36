//! Writing state dicts as PyTorch checkpoints that `torch.load(..., weights_only=True)`
//! reads: the zip format and the legacy format, each tensor contiguous in a storage
//! of its own. The pickles use protocol 2 and only the callables a state dict needs.

use std::io::Write;

use attrib_core::{Error, Result};

use crate::tensors::{DType, RawTensor};

fn storage_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "FloatStorage",
        DType::F64 => "DoubleStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 => "LongStorage",
        DType::I32 => "IntStorage",
        DType::I16 => "ShortStorage",
        DType::I8 => "CharStorage",
        DType::U8 => "ByteStorage",
        DType::Bool => "BoolStorage",
    }
}

/// A protocol-2 pickle under construction.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    fn int(&mut self, v: usize) -> &mut Self {
        match i32::try_from(v) {
            Ok(i) => self.op(b"J").op(&i.to_le_bytes()),
            Err(_) => self.op(&[0x8a, 8]).op(&(v as u64).to_le_bytes()),
        }
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.op(b"X")
            .op(&(s.len() as u32).to_le_bytes())
            .op(s.as_bytes())
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(b"c")
            .op(module.as_bytes())
            .op(b"\n")
            .op(name.as_bytes())
            .op(b"\n")
    }

    fn tuple_of(&mut self, v: &[usize]) -> &mut Self {
        self.op(b"(");
        for &x in v {
            self.int(x);
        }
        self.op(b"t")
    }

    /// `OrderedDict(name -> _rebuild_tensor_v2(storage i, 0, shape, strides, ...))`;
    /// `legacy` adds the legacy persistent id's sixth field (no view).
    fn state_dict(tensors: &[(&String, &RawTensor)], legacy: bool) -> Vec<u8> {
        let mut p = Pickle::default();
        p.op(&[0x80, 2])
            .global("collections", "OrderedDict")
            .op(b")R(");
        for (i, (name, t)) in tensors.iter().enumerate() {
            let mut strides = vec![1usize; t.shape.len()];
            for d in (0..t.shape.len().saturating_sub(1)).rev() {
                strides[d] = strides[d + 1] * t.shape[d + 1];
            }
            let numel = t.bytes.len() / t.dtype.size();
            p.str(name)
                .global("torch._utils", "_rebuild_tensor_v2")
                .op(b"((")
                .str("storage")
                .global("torch", storage_type(t.dtype))
                .str(&i.to_string())
                .str("cpu")
                .int(numel);
            if legacy {
                p.op(b"N");
            }
            p.op(b"tQ")
                .int(0)
                .tuple_of(&t.shape)
                .tuple_of(&strides)
                .op(&[0x89])
                .global("collections", "OrderedDict")
                .op(b")RtR");
        }
        p.op(b"u.");
        p.0
    }
}

fn check(tensors: &[(&String, &RawTensor)]) -> Result<()> {
    for (name, t) in tensors {
        let n = t
            .shape
            .iter()
            .try_fold(t.dtype.size(), |a, &d| a.checked_mul(d));
        if n != Some(t.bytes.len()) {
            return Err(Error::Weights(format!(
                "`{name}`: {} bytes do not make shape {:?} of {:?}",
                t.bytes.len(),
                t.shape,
                t.dtype
            )));
        }
    }
    Ok(())
}

/// The zip format (`torch.save` since PyTorch 1.6): `archive/data.pkl`, one
/// `archive/data/<i>` per tensor, `archive/version`, `archive/byteorder`, stored
/// uncompressed.
pub(crate) fn write_zip(tensors: &[(&String, &RawTensor)]) -> Result<Vec<u8>> {
    check(tensors)?;
    let zip_err = |e: zip::result::ZipError| Error::Weights(format!("zip: {e}"));
    let io_err = |e: std::io::Error| Error::Weights(format!("zip: {e}"));
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64)
        .large_file(
            tensors
                .iter()
                .any(|(_, t)| t.bytes.len() as u64 >= u32::MAX as u64),
        );
    let entry = |w: &mut zip::ZipWriter<_>, name: &str, bytes: &[u8]| -> Result<()> {
        w.start_file(format!("archive/{name}"), opts)
            .map_err(zip_err)?;
        w.write_all(bytes).map_err(io_err)
    };
    entry(&mut w, "data.pkl", &Pickle::state_dict(tensors, false))?;
    entry(&mut w, "byteorder", b"little")?;
    for (i, (_, t)) in tensors.iter().enumerate() {
        entry(&mut w, &format!("data/{i}"), &t.bytes)?;
    }
    entry(&mut w, "version", b"3\n")?;
    Ok(w.finish().map_err(zip_err)?.into_inner())
}

/// The legacy format (`_use_new_zipfile_serialization=False`): the magic number,
/// protocol version and system info pickles, the state dict, the storage keys, then
/// each storage as its element count (u64) and bytes.
pub(crate) fn write_legacy(tensors: &[(&String, &RawTensor)]) -> Result<Vec<u8>> {
    check(tensors)?;
    let mut out = Vec::new();
    out.extend_from_slice(&[0x80, 2, 0x8a, 10]);
    out.extend_from_slice(&crate::pth::MAGIC);
    out.push(b'.');
    let mut p = Pickle::default();
    p.op(&[0x80, 2]).int(1001).op(b".");
    p.op(&[0x80, 2, b'}', b'('])
        .str("protocol_version")
        .int(1001)
        .str("little_endian")
        .op(&[0x88])
        .str("type_sizes")
        .op(b"}(")
        .str("short")
        .int(2)
        .str("int")
        .int(4)
        .str("long")
        .int(4)
        .op(b"uu.");
    out.extend_from_slice(&p.0);
    out.extend_from_slice(&Pickle::state_dict(tensors, true));
    let mut keys = Pickle::default();
    keys.op(&[0x80, 2, b']', b'(']);
    for i in 0..tensors.len() {
        keys.str(&i.to_string());
    }
    keys.op(b"e.");
    out.extend_from_slice(&keys.0);
    for (_, t) in tensors {
        out.extend_from_slice(&((t.bytes.len() / t.dtype.size()) as u64).to_le_bytes());
        out.extend_from_slice(&t.bytes);
    }
    Ok(out)
}
