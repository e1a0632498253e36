//! `.npy` arrays (NumPy's format, versions 1 to 3) of floats, read from untrusted
//! files: the header's claimed shape is checked against the file's size before
//! anything is allocated.

use std::io::Read;
use std::path::Path;

use attrib_core::{Error, Result};
use ndarray::{ArrayD, IxDyn};

use crate::limits::Limits;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Io {
        path: path.display().to_string(),
        reason: format!("not a readable .npy array: {}", reason.into()),
    }
}

/// The longest header accepted (NumPy writes at most a few hundred bytes).
const MAX_HEADER: usize = 1 << 16;

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `descr`: `<f4`, `>f8`, ...
    pub descr: String,
    /// Column-major data.
    pub fortran_order: bool,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Where the data starts.
    pub data_offset: usize,
}

/// The value of `key` in NumPy's header dict literal (`{'descr': '<f4', ...}`), as
/// written, up to the next top-level comma or the closing brace.
fn field<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at = [format!("'{key}'"), format!("\"{key}\"")]
        .iter()
        .find_map(|k| dict.find(k.as_str()).map(|i| i + k.len()))?;
    let rest = dict[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Parses the magic, version and header dict from the start of a file.
pub fn parse_header(head: &[u8], path: &Path) -> Result<Header> {
    if !head.starts_with(b"\x93NUMPY") || head.len() < 10 {
        return Err(bad(path, "missing the \\x93NUMPY magic"));
    }
    let (len, start) = match head[6] {
        1 => (u16::from_le_bytes([head[8], head[9]]) as usize, 10),
        2 | 3 => {
            let b = head
                .get(8..12)
                .ok_or_else(|| bad(path, "truncated header"))?;
            (
                u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize,
                12,
            )
        }
        v => return Err(bad(path, format!("unsupported format version {v}"))),
    };
    if len > MAX_HEADER {
        return Err(bad(path, format!("a header of {len} bytes")));
    }
    let text = head
        .get(start..start + len)
        .ok_or_else(|| bad(path, "truncated header"))?;
    let dict = std::str::from_utf8(text).map_err(|_| bad(path, "the header is not text"))?;
    let unquote = |s: &str| s.trim_matches(|c| c == '\'' || c == '"').to_string();
    let descr = field(dict, "descr")
        .map(unquote)
        .ok_or_else(|| bad(path, "the header has no descr"))?;
    let fortran_order = match field(dict, "fortran_order") {
        Some("False") => false,
        Some("True") => true,
        _ => return Err(bad(path, "the header has no fortran_order")),
    };
    let shape_text = field(dict, "shape").ok_or_else(|| bad(path, "the header has no shape"))?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad(path, format!("shape {shape_text} is not a tuple")))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|d| {
            d.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| bad(path, format!("shape {shape_text} is not a tuple of sizes")))
        })
        .collect::<Result<Vec<_>>>()?;
    if shape.len() > 32 {
        return Err(bad(path, format!("{} dimensions", shape.len())));
    }
    Ok(Header {
        descr,
        fortran_order,
        shape,
        data_offset: start + len,
    })
}

/// Reads a float `.npy` array (`<f4`, `>f4`, `<f8`, `>f8`; float64 is rounded to
/// float32), in C or Fortran order, as a standard-layout array, within the default
/// [`Limits`].
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>> {
    read_f32_with(path, &Limits::default())
}

/// [`read_f32`] within `limits`. The header is read and checked against the file's
/// size before the data is read.
pub fn read_f32_with(path: &Path, limits: &Limits) -> Result<ArrayD<f32>> {
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut head = Vec::new();
    (&mut f)
        .take((MAX_HEADER + 12) as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    let h = parse_header(&head, path)?;
    let (elem, data_len) = check_size(&h, file_len, limits, path)?;
    let mut data = head.split_off(h.data_offset.min(head.len()));
    data.reserve_exact(data_len.saturating_sub(data.len()));
    f.take((data_len as u64).saturating_sub(data.len() as u64))
        .read_to_end(&mut data)
        .map_err(io)?;
    data.truncate(data_len);
    if data.len() != data_len {
        return Err(bad(path, "the file ended early (was it being written?)"));
    }
    decode(&h, elem, &data, path)
}

/// [`read_f32`] of a whole file's bytes; `name` names it in errors.
pub fn from_bytes(bytes: &[u8], name: &str, limits: &Limits) -> Result<ArrayD<f32>> {
    let path = Path::new(name);
    let h = parse_header(bytes, path)?;
    let (elem, data_len) = check_size(&h, bytes.len() as u64, limits, path)?;
    decode(
        &h,
        elem,
        &bytes[h.data_offset..h.data_offset + data_len],
        path,
    )
}

/// The element type: bytes, big-endian, float64.
type Elem = (usize, bool, bool);

/// The element type and the data's length in bytes, checked against the limits and
/// against what the file holds after its header.
fn check_size(h: &Header, file_len: u64, limits: &Limits, path: &Path) -> Result<(Elem, usize)> {
    let elem = match h.descr.as_str() {
        "<f4" | "|f4" | "=f4" => (4usize, false, false),
        ">f4" => (4, true, false),
        "<f8" | "=f8" => (8, false, true),
        ">f8" => (8, true, true),
        other => {
            return Err(bad(
                path,
                format!("element type {other:?}; expected float32 or float64"),
            ))
        }
    };
    let numel = h
        .shape
        .iter()
        .try_fold(elem.0, |a, &d| a.checked_mul(d))
        .map(|bytes| bytes / elem.0)
        .filter(|&n| n <= limits.max_npy_elements)
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "shape {:?} has more than the {} elements allowed (attrib_io::Limits)",
                    h.shape, limits.max_npy_elements
                ),
            )
        })?;
    let data_len = numel * elem.0;
    let held = file_len.saturating_sub(h.data_offset as u64);
    if held != data_len as u64 {
        return Err(bad(
            path,
            format!(
                "the header claims shape {:?} ({data_len} bytes of data), the file holds {held}",
                h.shape
            ),
        ));
    }
    Ok((elem, data_len))
}

fn decode(h: &Header, (_, big, wide): Elem, data: &[u8], path: &Path) -> Result<ArrayD<f32>> {
    let values: Vec<f32> = if wide {
        data.chunks_exact(8)
            .map(|c| {
                let b: [u8; 8] = c.try_into().expect("8 bytes");
                (if big {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                }) as f32
            })
            .collect()
    } else {
        data.chunks_exact(4)
            .map(|c| {
                let b: [u8; 4] = c.try_into().expect("4 bytes");
                if big {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            })
            .collect()
    };
    let a = if h.fortran_order {
        let rev: Vec<usize> = h.shape.iter().rev().copied().collect();
        let a =
            ArrayD::from_shape_vec(IxDyn(&rev), values).map_err(|e| bad(path, e.to_string()))?;
        a.reversed_axes().as_standard_layout().into_owned()
    } else {
        ArrayD::from_shape_vec(IxDyn(&h.shape), values).map_err(|e| bad(path, e.to_string()))?
    };
    Ok(a)
}
