//! Reading PyTorch checkpoints (`torch.save` of a state dict) without Python: the zip
//! format (PyTorch >= 1.6) and the legacy non-zip format (a sequence of pickles
//! followed by raw storages).
//!
//! A `.pth` file is a pickle program, and checkpoints come from strangers, so the
//! pickle machine here is written for hostile input:
//! - it understands exactly what state dicts use; any other callable (arbitrary
//!   classes, code) is refused, never executed;
//! - values live in one arena and are referred to by index, so the memo, `DUP` and
//!   containers share values instead of copying them (a pickle that appends a list to
//!   itself stays the size of the pickle), and nothing is recursive: building,
//!   dropping and describing values cannot overflow the stack however deep the
//!   nesting;
//! - every resource is counted against a [`Limits`]: values, container slots, memo
//!   entries, nesting depth, string bytes, the pickle's size and the bytes the
//!   tensors materialise;
//! - every size and offset is computed with checked arithmetic, and a storage is read
//!   only as far as its tensors reach (a compressed zip entry is never inflated
//!   beyond that).

use std::collections::HashMap;
use std::io::Read;

use attrib_core::{Error, Result};

use crate::guard::guarded;
use crate::limits::Limits;
use crate::tensors::RawTensor;

mod pickle;

use pickle::{Arena, Id, Obj, TensorRef, Unpickler};

fn bad(reason: impl Into<String>) -> Error {
    Error::Weights(format!(
        "not a readable PyTorch checkpoint: {}",
        reason.into()
    ))
}

fn over(what: &str, limit: usize) -> Error {
    bad(format!(
        "the pickle exceeds the reader's limit of {limit} {what} (see attrib_io::Limits)"
    ))
}

/// The most dimensions a tensor may have (PyTorch's own limit for most kernels is
/// lower).
const MAX_RANK: usize = 64;

/// Nested checkpoints (`{'state_dict': {...}}`, `{'model': {...}}`) are followed this
/// many levels deep.
const MAX_WRAPPING: usize = 4;

/// The `(name, tensor)` entries of the state dict at `root`, in the file's order.
fn state_dict(arena: &Arena<'_>, root: Id) -> Result<Vec<(String, TensorRef)>> {
    let mut at = root;
    for _ in 0..=MAX_WRAPPING {
        let Obj::Dict(items) = arena.get(at) else {
            return Err(bad(
                "the checkpoint is not a state dict (a mapping of names to tensors)",
            ));
        };
        let mut out = Vec::new();
        let mut inner = None;
        let mut name_bytes = 0usize;
        for &(k, v) in items {
            let Some(name) = arena.str(k) else {
                return Err(bad("a state-dict key is not a string"));
            };
            match arena.get(v) {
                Obj::Tensor(t) => {
                    // Entries may share one key and one tensor: count what copying
                    // them out costs, not what the pickle stored.
                    name_bytes = name_bytes.saturating_add(name.len());
                    if out.len() >= arena.limits.max_tensors {
                        return Err(over("tensors", arena.limits.max_tensors));
                    }
                    if name_bytes > arena.limits.max_pickle_string_bytes {
                        return Err(over(
                            "bytes of tensor names",
                            arena.limits.max_pickle_string_bytes,
                        ));
                    }
                    out.push((name.to_string(), (**t).clone()))
                }
                // A nested `state_dict` / `model` entry: the common wrapping of
                // checkpoints.
                Obj::Dict(_) if name == "state_dict" || name == "model" => {
                    inner = Some(v);
                    break;
                }
                _ => {}
            }
        }
        match inner {
            Some(v) => at = v,
            None if out.is_empty() => return Err(bad("no tensors found in the checkpoint")),
            None => return Ok(out),
        }
    }
    Err(bad(format!(
        "state dicts nested more than {MAX_WRAPPING} levels deep"
    )))
}

/// The storage elements a tensor reaches: `None` for an empty tensor, else one past
/// the largest element index, relative to its storage's start. Checked: a size or
/// stride that overflows is an error, not a wrapped index.
fn extent(name: &str, t: &TensorRef) -> Result<Option<usize>> {
    let overflow = || {
        Error::Weights(format!(
            "`{name}`: offset {} with size {:?} and stride {:?} overflows",
            t.offset, t.size, t.stride
        ))
    };
    if t.size.contains(&0) {
        return Ok(None);
    }
    let mut last = t
        .offset
        .checked_add(t.storage.view_offset)
        .ok_or_else(overflow)?;
    for (&d, &s) in t.size.iter().zip(&t.stride) {
        last = (d - 1)
            .checked_mul(s)
            .and_then(|x| last.checked_add(x))
            .ok_or_else(overflow)?;
    }
    let end = last.checked_add(1).ok_or_else(overflow)?;
    if let Some(len) = t.storage.view_len {
        if end - t.storage.view_offset > len {
            return Err(Error::Weights(format!(
                "`{name}` reaches element {} of a storage view of {len}",
                end - t.storage.view_offset
            )));
        }
    }
    Ok(Some(end))
}

/// Human-readable bytes.
fn size_text(n: u128) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Gathers a strided view out of its storage into a contiguous tensor, charging its
/// size against `budget` (bytes left for materialised tensors).
fn materialise(name: &str, t: &TensorRef, storage: &[u8], budget: &mut u64) -> Result<RawTensor> {
    let es = t.storage.dtype.size();
    let numel = t
        .size
        .iter()
        .try_fold(1u128, |a, &d| a.checked_mul(d as u128))
        .unwrap_or(u128::MAX);
    let nbytes = numel.saturating_mul(es as u128);
    if nbytes > *budget as u128 {
        let reach = extent(name, t).ok().flatten().unwrap_or(0);
        return Err(Error::Weights(format!(
            "`{name}` would take {} (shape {:?}, from {reach} stored elements): beyond what is left of the reader's budget, {} (attrib_io::Limits). An expanded view is saved as its storage alone and must be copied in full to be used: save `tensor.contiguous()`, or raise the limit",
            size_text(nbytes),
            t.size,
            size_text(*budget as u128),
        )));
    }
    *budget -= nbytes as u64;
    let Some(end) = extent(name, t)? else {
        return Ok(RawTensor {
            dtype: t.storage.dtype,
            shape: t.size.clone(),
            bytes: Vec::new(),
        });
    };
    let reach = end
        .checked_mul(es)
        .filter(|&r| r <= storage.len())
        .ok_or_else(|| {
            Error::Weights(format!(
                "`{name}`: storage `{}` is truncated: the tensor reaches element {end} ({} bytes), the storage has {} bytes",
                t.storage.key,
                end as u128 * es as u128,
                storage.len()
            ))
        })?;
    let storage = &storage[..reach];
    let base = t.offset + t.storage.view_offset;
    let nbytes = nbytes as usize;
    let mut bytes = Vec::with_capacity(nbytes);
    let nd = t.size.len();
    if nd == 0 {
        bytes.extend_from_slice(&storage[base * es..(base + 1) * es]);
    } else {
        // Innermost runs: one copy per run when they are contiguous.
        let (run_len, run_stride) = (t.size[nd - 1], t.stride[nd - 1]);
        let outer = &t.size[..nd - 1];
        let mut idx = vec![0usize; outer.len()];
        loop {
            let start = base + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            if run_stride == 1 {
                bytes.extend_from_slice(&storage[start * es..(start + run_len) * es]);
            } else {
                for j in 0..run_len {
                    let at = (start + j * run_stride) * es;
                    bytes.extend_from_slice(&storage[at..at + es]);
                }
            }
            let mut d = outer.len();
            loop {
                if d == 0 {
                    return Ok(RawTensor {
                        dtype: t.storage.dtype,
                        shape: t.size.clone(),
                        bytes,
                    });
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < outer[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    Ok(RawTensor {
        dtype: t.storage.dtype,
        shape: t.size.clone(),
        bytes,
    })
}

/// What the tensors need of each storage: bytes from its start.
fn storage_needs(tensors: &[(String, TensorRef)]) -> Result<HashMap<String, usize>> {
    let mut need: HashMap<String, usize> = HashMap::new();
    for (name, t) in tensors {
        let bytes = match extent(name, t)? {
            Some(end) => end
                .checked_mul(t.storage.dtype.size())
                .ok_or_else(|| Error::Weights(format!("`{name}`: its storage extent overflows")))?,
            None => 0,
        };
        let e = need.entry(t.storage.key.clone()).or_insert(0);
        *e = (*e).max(bytes);
    }
    Ok(need)
}

/// Whether `data` starts like a zip checkpoint.
pub(crate) fn is_zip(data: &[u8]) -> bool {
    data.starts_with(b"PK\x03\x04")
}

/// torch.serialization.MAGIC_NUMBER = 0x1950a86a20f9469cfc6c, little-endian.
pub(crate) const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// If `data` starts with the legacy format's first pickle (the magic number, as
/// protocol 2+ writes it: `PROTO n`, an optional `FRAME`, `LONG1` of the ten magic
/// bytes, `STOP`), the position after it. Checked byte by byte, before any pickle runs.
pub(crate) fn legacy_magic_end(data: &[u8]) -> Option<usize> {
    let mut pos = 0;
    if data.first() != Some(&0x80) || data.get(1).is_none_or(|&v| v < 2) {
        return None;
    }
    pos += 2;
    if data.get(pos) == Some(&0x95) {
        pos += 9;
    }
    let long = [&[0x8a, 10][..], &MAGIC[..], b"."].concat();
    data.get(pos..pos + long.len())
        .filter(|s| *s == long.as_slice())
        .map(|_| pos + long.len())
}

/// Reads a checkpoint's state dict (zip or legacy format) into raw tensors, in the
/// file's order.
pub(crate) fn read_state_dict(data: &[u8], limits: &Limits) -> Result<Vec<(String, RawTensor)>> {
    if is_zip(data) {
        read_zip(data, limits)
    } else if let Some(pos) = legacy_magic_end(data) {
        read_legacy(data, pos, limits)
    } else {
        Err(bad("neither the zip nor the legacy format"))
    }
}

/// The budget for what reading may allocate beyond the file itself (inflated
/// storages and materialised tensors): a multiple of the file's size plus a constant,
/// so a state dict whose tensors share storages (tied weights) reads, and an expanded
/// view that would copy its storage a billion times does not.
fn tensor_budget(data: &[u8], limits: &Limits) -> u64 {
    (data.len() as u64)
        .saturating_mul(limits.tensor_bytes_per_file_byte)
        .saturating_add(limits.tensor_bytes_slack)
}

/// Charges `n` bytes for `what` against `budget`.
fn charge(budget: &mut u64, n: usize, what: impl FnOnce() -> String) -> Result<()> {
    if n as u64 > *budget {
        return Err(Error::Weights(format!(
            "{} would take {}: beyond what is left of the reader's budget, {} (attrib_io::Limits)",
            what(),
            size_text(n as u128),
            size_text(*budget as u128)
        )));
    }
    *budget -= n as u64;
    Ok(())
}

/// A zip entry's bytes: borrowed from the file when stored uncompressed (as
/// `torch.save` writes them), inflated otherwise.
enum Entry<'a> {
    Stored(&'a [u8]),
    Inflated(Vec<u8>),
}

impl Entry<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Entry::Stored(b) => b,
            Entry::Inflated(v) => v,
        }
    }
}

/// Reads the first `want` bytes of entry `name`: an error if the entry declares
/// fewer, and never more than `want` read or inflated. Inflated bytes are charged to
/// `budget`.
fn zip_entry<'a>(
    zip: &mut zip::ZipArchive<std::io::Cursor<&'a [u8]>>,
    data: &'a [u8],
    name: &str,
    want: usize,
    budget: &mut u64,
) -> Result<Entry<'a>> {
    guarded("the zip reader", Error::Weights, || {
        zip_entry_unguarded(zip, data, name, want, budget)
    })
}

fn zip_entry_unguarded<'a>(
    zip: &mut zip::ZipArchive<std::io::Cursor<&'a [u8]>>,
    data: &'a [u8],
    name: &str,
    want: usize,
    budget: &mut u64,
) -> Result<Entry<'a>> {
    let f = zip
        .by_name(name)
        .map_err(|e| bad(format!("zip entry {name}: {e}")))?;
    let declared = f.size();
    if declared < want as u64 {
        return Err(Error::Weights(format!(
            "zip entry {name} is truncated: {want} bytes are needed, it holds {declared}"
        )));
    }
    let truncated = || {
        Error::Weights(format!(
            "zip entry {name} is truncated: {want} bytes are needed, the file ends first"
        ))
    };
    if f.compression() == zip::CompressionMethod::Stored && !f.encrypted() {
        let start = f
            .data_start()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(truncated)?;
        let end = start.checked_add(want).ok_or_else(truncated)?;
        return data
            .get(start..end)
            .map(Entry::Stored)
            .ok_or_else(truncated);
    }
    charge(budget, want, || format!("inflating zip entry {name}"))?;
    let mut buf = Vec::with_capacity(want);
    f.take(want as u64)
        .read_to_end(&mut buf)
        .map_err(|e| bad(format!("zip entry {name}: {e}")))?;
    if buf.len() < want {
        return Err(truncated());
    }
    Ok(Entry::Inflated(buf))
}

fn read_zip(data: &[u8], limits: &Limits) -> Result<Vec<(String, RawTensor)>> {
    let (mut zip, pkl) = guarded("the zip reader", Error::Weights, || {
        let zip = zip::ZipArchive::new(std::io::Cursor::new(data))
            .map_err(|e| bad(format!("zip: {e}")))?;
        let pkl = zip
            .file_names()
            .filter_map(|n| n.ok())
            .filter(|n| n.ends_with("data.pkl"))
            .min_by_key(|n| n.len())
            .ok_or_else(|| bad("zip without data.pkl"))?
            .into_owned();
        Ok((zip, pkl))
    })?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut budget = tensor_budget(data, limits);
    let declared = guarded("the zip reader", Error::Weights, || {
        zip.by_name(&pkl)
            .map(|f| f.size())
            .map_err(|e| bad(format!("zip entry {pkl}: {e}")))
    })?;
    let pickle_len = usize::try_from(declared)
        .ok()
        .filter(|&n| n <= limits.max_pickle_bytes)
        .ok_or_else(|| over("bytes of pickle", limits.max_pickle_bytes))?;
    let pickle = zip_entry(&mut zip, data, &pkl, pickle_len, &mut budget)?;
    let mut arena = Arena::new(limits);
    let root = Unpickler::new(pickle.bytes(), 0, &mut arena).run()?;
    let tensors = state_dict(&arena, root)?;
    drop(arena);
    drop(pickle);
    let needs = storage_needs(&tensors)?;
    let mut storages: HashMap<String, Entry<'_>> = HashMap::new();
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let key = &t.storage.key;
        if !storages.contains_key(key) {
            let entry = format!("{prefix}data/{key}");
            let bytes = zip_entry(&mut zip, data, &entry, needs[key], &mut budget)?;
            storages.insert(key.clone(), bytes);
        }
        let t = materialise(&name, &t, storages[key].bytes(), &mut budget)?;
        out.push((name, t));
    }
    Ok(out)
}

/// Runs the pickle at `*pos`, leaving `*pos` after its STOP. Each pickle of the
/// legacy format is a separate `pickle.load`, with a memo of its own.
fn next_pickle(data: &[u8], pos: &mut usize, arena: &mut Arena<'_>) -> Result<Id> {
    let mut u = Unpickler::new(data, *pos, arena);
    let v = u.run()?;
    *pos = u.pos;
    Ok(v)
}

fn read_legacy(data: &[u8], magic_end: usize, limits: &Limits) -> Result<Vec<(String, RawTensor)>> {
    let mut arena = Arena::new(limits);
    let mut pos = magic_end;
    let _protocol = next_pickle(data, &mut pos, &mut arena)?;
    let _sys_info = next_pickle(data, &mut pos, &mut arena)?;
    let root = next_pickle(data, &mut pos, &mut arena)?;
    let keys = next_pickle(data, &mut pos, &mut arena)?;
    let tensors = state_dict(&arena, root)?;
    let Obj::List(keys) = arena.get(keys) else {
        return Err(bad("missing storage key list"));
    };
    let mut storages: HashMap<&str, &[u8]> = HashMap::new();
    for &k in keys {
        let k = arena
            .str(k)
            .ok_or_else(|| bad("a storage key is not a string"))?;
        let es = arena
            .storage_dtypes
            .get(k)
            .ok_or_else(|| bad(format!("storage `{k}` has no element type")))?
            .size();
        let truncated = |len: String| {
            Error::Weights(format!(
                "storage `{k}` is truncated: {len} declared at byte {pos}, the file ends at byte {}",
                data.len()
            ))
        };
        let n = data
            .get(pos..pos.saturating_add(8))
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| truncated("its size".into()))?;
        let len = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(es))
            .filter(|&len| len <= data.len() - pos - 8)
            .ok_or_else(|| truncated(format!("{n} elements of {es} bytes")))?;
        storages.insert(k, &data[pos + 8..pos + 8 + len]);
        pos += 8 + len;
    }
    let mut budget = tensor_budget(data, limits);
    tensors
        .into_iter()
        .map(|(name, t)| {
            let s = storages.get(t.storage.key.as_str()).ok_or_else(|| {
                Error::Weights(format!("`{name}`: storage `{}` missing", t.storage.key))
            })?;
            let raw = materialise(&name, &t, s, &mut budget)?;
            Ok((name, raw))
        })
        .collect()
}
