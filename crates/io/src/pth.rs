//! Reading PyTorch checkpoints (`torch.save` of a state dict) without Python: the zip
//! format (PyTorch >= 1.6) and the legacy non-zip format (a sequence of pickles
//! followed by raw storages). A small pickle machine understands exactly what state
//! dicts use; anything else (arbitrary classes, code) is rejected, never executed.

use std::collections::HashMap;
use std::io::Read;

use attrib_core::{Error, Result};

use crate::tensors::{DType, RawTensor};

fn bad(reason: impl Into<String>) -> Error {
    Error::Weights(format!(
        "not a readable PyTorch checkpoint: {}",
        reason.into()
    ))
}

#[derive(Debug, Clone)]
enum Val {
    None,
    Bool(bool),
    Int(i64),
    /// A float or a byte string: state dicts carry them only in metadata.
    Opaque,
    Str(String),
    /// An integer wider than 64 bits (the legacy format's magic number), little-endian.
    BigInt(Vec<u8>),
    Tuple(Vec<Val>),
    List(Vec<Val>),
    Dict(Vec<(Val, Val)>),
    Global(String, String),
    Storage {
        key: String,
        dtype: DType,
    },
    Tensor {
        key: String,
        dtype: DType,
        offset: usize,
        size: Vec<usize>,
        stride: Vec<usize>,
    },
    Mark,
}

impl Val {
    fn int(&self) -> Result<i64> {
        match self {
            Val::Int(i) => Ok(*i),
            Val::Bool(b) => Ok(*b as i64),
            other => Err(bad(format!("expected an integer, found {other:?}"))),
        }
    }

    fn usizes(&self) -> Result<Vec<usize>> {
        match self {
            Val::Tuple(v) | Val::List(v) => v
                .iter()
                .map(|x| {
                    x.int()
                        .and_then(|i| usize::try_from(i).map_err(|_| bad("negative size")))
                })
                .collect(),
            other => Err(bad(format!("expected a size tuple, found {other:?}"))),
        }
    }
}

fn storage_dtype(name: &str) -> Result<DType> {
    Ok(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        other => return Err(bad(format!("unsupported storage type {other}"))),
    })
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Val>,
    memo: HashMap<u32, Val>,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Unpickler {
            data,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| bad("truncated pickle"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("truncated pickle line"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn pop(&mut self) -> Result<Val> {
        self.stack
            .pop()
            .ok_or_else(|| bad("pickle stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Val>> {
        let m = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Val::Mark))
            .ok_or_else(|| bad("pickle mark missing"))?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Result<&mut Val> {
        self.stack
            .last_mut()
            .ok_or_else(|| bad("pickle stack underflow"))
    }

    /// BINGET / LONG_BINGET: pushes memo entry `i`.
    fn push_memo(&mut self, i: u32) -> Result<()> {
        let v = self
            .memo
            .get(&i)
            .cloned()
            .ok_or_else(|| bad("unknown memo"))?;
        self.stack.push(v);
        Ok(())
    }

    fn utf8(&mut self, n: usize) -> Result<Val> {
        let b = self.take(n)?;
        Ok(Val::Str(
            String::from_utf8(b.to_vec()).map_err(|_| bad("invalid utf-8 string"))?,
        ))
    }

    fn persistent(&self, pid: Val) -> Result<Val> {
        let Val::Tuple(t) = pid else {
            return Err(bad("unexpected persistent id"));
        };
        match t.as_slice() {
            [Val::Str(kind), Val::Global(_, ty), Val::Str(key), _location, _numel, ..]
                if kind == "storage" =>
            {
                Ok(Val::Storage {
                    key: key.clone(),
                    dtype: storage_dtype(ty)?,
                })
            }
            _ => Err(bad(format!("unsupported persistent id {t:?}"))),
        }
    }

    fn reduce(&self, f: Val, args: Val) -> Result<Val> {
        let Val::Global(module, name) = &f else {
            return Err(bad(format!("cannot call {f:?}")));
        };
        let args = match args {
            Val::Tuple(a) => a,
            other => return Err(bad(format!("bad arguments {other:?}"))),
        };
        match (module.as_str(), name.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                let [storage, offset, size, stride, ..] = args.as_slice() else {
                    return Err(bad("short _rebuild_tensor arguments"));
                };
                let Val::Storage { key, dtype } = storage else {
                    return Err(bad("tensor without storage"));
                };
                Ok(Val::Tensor {
                    key: key.clone(),
                    dtype: *dtype,
                    offset: usize::try_from(offset.int()?).map_err(|_| bad("negative offset"))?,
                    size: size.usizes()?,
                    stride: stride.usizes()?,
                })
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => args
                .into_iter()
                .next()
                .ok_or_else(|| bad("empty _rebuild_parameter")),
            ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
                Ok(Val::Dict(Vec::new()))
            }
            ("torch", "device") => Ok(Val::None),
            _ => Err(bad(format!("refusing to call {module}.{name}"))),
        }
    }

    fn run(&mut self) -> Result<Val> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.stack.push(Val::Mark),
                b'}' => self.stack.push(Val::Dict(Vec::new())),
                b']' => self.stack.push(Val::List(Vec::new())),
                b')' => self.stack.push(Val::Tuple(Vec::new())),
                b'N' => self.stack.push(Val::None),
                0x88 => self.stack.push(Val::Bool(true)),
                0x89 => self.stack.push(Val::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Val::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Val::Int(v as i64))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Val::Int(v as i64))
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        self.stack.push(Val::BigInt(b.to_vec()));
                        continue;
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Val::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Val::Opaque)
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v)
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v)
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v)
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v)
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    self.stack.push(Val::Opaque)
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    self.take(n)?;
                    self.stack.push(Val::Opaque)
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Val::Global(module, name))
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Val::Str(m), Val::Str(n)) => self.stack.push(Val::Global(m, n)),
                        _ => return Err(bad("bad STACK_GLOBAL")),
                    }
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'r' => {
                    let i = self.u32()?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.push_memo(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.push_memo(i)?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Val::Tuple(items))
                }
                0x85 => {
                    let a = self.pop()?;
                    self.stack.push(Val::Tuple(vec![a]))
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(Val::Tuple(vec![a, b]))
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(Val::Tuple(vec![a, b, c]))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Val::List(items))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = items
                        .chunks(2)
                        .filter(|c| c.len() == 2)
                        .map(|c| (c[0].clone(), c[1].clone()))
                        .collect();
                    self.stack.push(Val::Dict(pairs))
                }
                b'a' => {
                    let v = self.pop()?;
                    if let Val::List(l) = self.top()? {
                        l.push(v);
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    if let Val::List(l) = self.top()? {
                        l.extend(items);
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    if let Val::Dict(d) = self.top()? {
                        d.push((k, v));
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if let Val::Dict(d) = self.top()? {
                        d.extend(
                            items
                                .chunks(2)
                                .filter(|c| c.len() == 2)
                                .map(|c| (c[0].clone(), c[1].clone())),
                        );
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.stack.push(v)
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args)?;
                    self.stack.push(v)
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args)
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.reduce(cls, args)?;
                    self.stack.push(v)
                }
                b'b' => {
                    // BUILD: state for dicts (`_metadata`) and parameters is not needed.
                    self.pop()?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v)
                }
                other => {
                    return Err(bad(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {}",
                        self.pos - 1
                    )))
                }
            }
        }
    }
}

/// A tensor as the pickle describes it, before its storage is read.
struct TensorRef {
    key: String,
    dtype: DType,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn state_dict(root: Val) -> Result<Vec<(String, TensorRef)>> {
    let Val::Dict(items) = root else {
        return Err(bad(
            "the checkpoint is not a state dict (a mapping of names to tensors)",
        ));
    };
    let mut out = Vec::new();
    for (k, v) in items {
        let Val::Str(name) = k else {
            return Err(bad("a state-dict key is not a string"));
        };
        match v {
            Val::Tensor {
                key,
                dtype,
                offset,
                size,
                stride,
            } => out.push((
                name,
                TensorRef {
                    key,
                    dtype,
                    offset,
                    size,
                    stride,
                },
            )),
            // A nested `state_dict` / `model` entry: the common wrapping of checkpoints.
            inner @ Val::Dict(_) if name == "state_dict" || name == "model" => {
                return state_dict(inner)
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(bad("no tensors found in the checkpoint"));
    }
    Ok(out)
}

/// Gathers a strided view out of its storage into a contiguous tensor.
fn materialise(name: &str, t: &TensorRef, storage: &[u8]) -> Result<RawTensor> {
    let es = t.dtype.size();
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(es).is_some())
        .ok_or_else(|| Error::Weights(format!("`{name}`: size {:?} overflows", t.size)))?;
    // The file bounds what can be read; a bogus size fails below, not on allocation.
    let mut bytes = Vec::with_capacity((numel * es).min(storage.len()));
    if t.size.len() != t.stride.len() {
        return Err(bad(format!("`{name}`: size and stride ranks differ")));
    }
    let nd = t.size.len();
    let mut idx = vec![0usize; nd];
    for _ in 0..numel {
        let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        let at = off * es;
        let chunk = storage
            .get(at..at + es)
            .ok_or_else(|| Error::Weights(format!("`{name}`: storage `{}` is truncated", t.key)))?;
        bytes.extend_from_slice(chunk);
        for d in (0..nd).rev() {
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(RawTensor {
        dtype: t.dtype,
        shape: t.size.clone(),
        bytes,
    })
}

/// Reads a checkpoint's state dict (zip or legacy format) into raw tensors, in the
/// file's order.
pub(crate) fn read_state_dict(data: &[u8]) -> Result<Vec<(String, RawTensor)>> {
    if data.starts_with(b"PK\x03\x04") {
        read_zip(data)
    } else if data.first() == Some(&0x80) {
        read_legacy(data)
    } else {
        Err(bad("neither the zip nor the legacy format"))
    }
}

fn read_zip(data: &[u8]) -> Result<Vec<(String, RawTensor)>> {
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(|e| bad(format!("zip: {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let pkl = names
        .iter()
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| bad("zip without data.pkl"))?
        .clone();
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut read = |name: &str| -> Result<Vec<u8>> {
        let mut f = zip
            .by_name(name)
            .map_err(|e| bad(format!("zip entry {name}: {e}")))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| bad(format!("zip entry {name}: {e}")))?;
        Ok(buf)
    };
    let pickle = read(&pkl)?;
    let tensors = state_dict(Unpickler::new(&pickle).run()?)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !storages.contains_key(&t.key) {
            let bytes = read(&format!("{prefix}data/{}", t.key))?;
            storages.insert(t.key.clone(), bytes);
        }
        out.push((name.clone(), materialise(&name, &t, &storages[&t.key])?));
    }
    Ok(out)
}

fn read_legacy(data: &[u8]) -> Result<Vec<(String, RawTensor)>> {
    let mut u = Unpickler::new(data);
    // torch.serialization.MAGIC_NUMBER = 0x1950a86a20f9469cfc6c, little-endian.
    const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
    match u.run()? {
        Val::BigInt(b) if b == MAGIC => {}
        _ => return Err(bad("the legacy format's magic number is missing")),
    }
    let _protocol = u.run()?;
    let _sys_info = u.run()?;
    u.memo.clear();
    let root = u.run()?;
    u.memo.clear();
    let keys = match u.run()? {
        Val::List(k) => k,
        _ => return Err(bad("missing storage key list")),
    };
    let tensors = state_dict(root)?;
    let dtype_of: HashMap<&str, DType> = tensors
        .iter()
        .map(|(_, t)| (t.key.as_str(), t.dtype))
        .collect();
    let mut pos = u.pos;
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for k in keys {
        let Val::Str(k) = k else {
            return Err(bad("a storage key is not a string"));
        };
        let n = data
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| {
                Error::Weights(format!(
                    "storage `{k}` is truncated (file ends at byte {})",
                    data.len()
                ))
            })?;
        let es = dtype_of.get(k.as_str()).map_or(1, |d| d.size());
        let len = n
            .checked_mul(es)
            .ok_or_else(|| bad("storage size overflows"))?;
        let end = (pos + 8).saturating_add(len);
        let bytes = data.get(pos + 8..end).ok_or_else(|| {
            Error::Weights(format!(
                "storage `{k}` is truncated: {len} bytes declared, file ends at byte {}",
                data.len()
            ))
        })?;
        storages.insert(k, bytes);
        pos += 8 + len;
    }
    tensors
        .into_iter()
        .map(|(name, t)| {
            let s = storages
                .get(&t.key)
                .ok_or_else(|| Error::Weights(format!("`{name}`: storage `{}` missing", t.key)))?;
            Ok((name.clone(), materialise(&name, &t, s)?))
        })
        .collect()
}
