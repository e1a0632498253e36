//! Crafted files for the hostile-input tests: pickles, `.pth` checkpoints (zip and
//! legacy), PNGs and `.npy` headers, written byte by byte so each test says exactly
//! what it feeds the readers. Shared with the CLI's tests (`#[path]`).
#![allow(dead_code)]

use std::io::Write;

/// A protocol-2 pickle under construction.
#[derive(Default, Clone)]
pub struct P(pub Vec<u8>);

impl P {
    pub fn new() -> Self {
        P(vec![0x80, 2])
    }
    pub fn op(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn int(self, v: i64) -> Self {
        self.op(&[0x8a, 8]).op(&v.to_le_bytes())
    }
    pub fn str(self, s: &str) -> Self {
        self.op(b"X")
            .op(&(s.len() as u32).to_le_bytes())
            .op(s.as_bytes())
    }
    pub fn global(self, module: &str, name: &str) -> Self {
        self.op(b"c")
            .op(module.as_bytes())
            .op(b"\n")
            .op(name.as_bytes())
            .op(b"\n")
    }
    pub fn ints(mut self, v: &[i64]) -> Self {
        self = self.op(b"(");
        for &x in v {
            self = self.int(x);
        }
        self.op(b"t")
    }
    pub fn stop(self) -> Vec<u8> {
        self.op(b".").0
    }
}

/// `{name: _rebuild_tensor_v2(storage(key, FloatStorage, numel), offset, size,
/// stride)}`; `legacy` adds the legacy persistent id's view field.
pub fn one_tensor(
    name: &str,
    key: &str,
    numel: i64,
    offset: i64,
    size: &[i64],
    stride: &[i64],
    legacy: bool,
) -> Vec<u8> {
    let mut p = P::new()
        .op(b"}")
        .str(name)
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b"((")
        .str("storage")
        .global("torch", "FloatStorage")
        .str(key)
        .str("cpu")
        .int(numel);
    if legacy {
        p = p.op(b"N");
    }
    p.op(b"tQ")
        .int(offset)
        .ints(size)
        .ints(stride)
        .op(&[0x89])
        .global("collections", "OrderedDict")
        .op(b")RtRs")
        .stop()
}

/// A zip checkpoint: `archive/data.pkl` and `archive/data/<key>` entries, stored or
/// deflated. A storage given by a generator is streamed (for very large entries).
pub fn zip_pth(pickle: &[u8], storages: Vec<(&str, Storage)>) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("archive/data.pkl", stored).unwrap();
    w.write_all(pickle).unwrap();
    for (key, s) in storages {
        match s {
            Storage::Bytes(b) => {
                w.start_file(format!("archive/data/{key}"), stored).unwrap();
                w.write_all(&b).unwrap();
            }
            Storage::DeflatedZeros(n) => {
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .compression_level(Some(1))
                    .large_file(n >= u32::MAX as u64);
                w.start_file(format!("archive/data/{key}"), opts).unwrap();
                let chunk = vec![0u8; 1 << 20];
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len() as u64) as usize;
                    w.write_all(&chunk[..k]).unwrap();
                    left -= k as u64;
                }
            }
        }
    }
    w.finish().unwrap().into_inner()
}

/// A zip storage entry's content.
pub enum Storage {
    Bytes(Vec<u8>),
    /// `n` zero bytes, deflated.
    DeflatedZeros(u64),
}

/// The legacy format around `root` (a state-dict pickle): magic, protocol, system
/// info, `root`, the storage keys, then each storage as (numel u64, bytes).
pub fn legacy_pth(root: &[u8], storages: &[(&str, u64, Vec<u8>)]) -> Vec<u8> {
    let magic = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
    let mut out = P::new().op(&[0x8a, 10]).op(&magic).stop();
    out.extend(P::new().int(1001).stop());
    out.extend(P::new().op(b"}").stop());
    out.extend_from_slice(root);
    let mut keys = P::new().op(b"](");
    for (k, _, _) in storages {
        keys = keys.str(k);
    }
    out.extend(keys.op(b"e").stop());
    for (_, numel, bytes) in storages {
        out.extend_from_slice(&numel.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// A list memoised, then 40 times: a fresh reference to it with two more references
/// appended, memoised again. A reader that copies memo values doubles the list each
/// step (2^40 elements); one that shares them holds one list. 326 bytes in a zip's
/// data.pkl or after the legacy magic.
pub fn memo_bomb() -> Vec<u8> {
    let mut p = P::new().op(b"]q\x00");
    for _ in 0..40 {
        p = p.op(b"h\x00(h\x00h\x00eq\x000");
    }
    p.op(b"h\x00").stop()
}

/// `depth` nested one-element tuples (TUPLE1), lists (APPEND) or dicts (SETITEM).
pub fn deep_nesting(kind: char, depth: usize) -> Vec<u8> {
    let mut p = P::new();
    match kind {
        't' => {
            p = p.op(b")");
            p.0.extend(std::iter::repeat_n(0x85u8, depth));
        }
        'l' => {
            p.0.extend(std::iter::repeat_n(b']', depth));
            p.0.extend(std::iter::repeat_n(b'a', depth - 1));
        }
        _ => {
            // D0 1 D1 1 D2 ... 1 Dn, then each SETITEM puts the top dict into the
            // one below its key.
            p = p.op(b"}");
            for _ in 0..depth {
                p = p.op(b"K\x01}");
            }
            p.0.extend(std::iter::repeat_n(b's', depth));
        }
    }
    p.stop()
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// zlib around one stored deflate block.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01, 0x01];
    let n = data.len() as u16;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(!n).to_le_bytes());
    out.extend_from_slice(data);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// A PNG of `w x h`, colour type `color` at 8 bits, with an optional PLTE chunk and
/// `rows` of raw scanline bytes (each prefixed with filter 0).
pub fn png(w: u32, h: u32, color: u8, plte: Option<&[u8]>, rows: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, color, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    if let Some(p) = plte {
        chunk(&mut out, b"PLTE", p);
    }
    let mut raw = Vec::new();
    for r in rows {
        raw.push(0);
        raw.extend_from_slice(r);
    }
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// An `.npy` header for `<f4` data of `shape`, with no data after it.
pub fn npy_header(shape: &str) -> Vec<u8> {
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// A safetensors file from its length and JSON header (written by Python, say), with
/// zero data of the sizes the header declares.
pub fn complete_safetensors(head: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(head[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&head[8..8 + n]).unwrap();
    let end = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["data_offsets"][1].as_u64().unwrap() as usize)
        .max()
        .unwrap_or(0);
    let mut data = head[..8 + n].to_vec();
    data.resize(8 + n + end, 0);
    data
}
