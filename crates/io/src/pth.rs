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
use crate::tensors::{DType, RawTensor};

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

/// An index into the arena.
type Id = u32;

/// A storage as a persistent id names it: its key (the zip entry `data/<key>` or the
/// legacy format's storage key), element type, and for the legacy format's storage
/// views, where the view starts in its root storage and how many elements it has.
#[derive(Debug, Clone)]
struct StorageRef {
    key: String,
    dtype: DType,
    view_offset: usize,
    view_len: Option<usize>,
}

/// A tensor as the pickle describes it, before its storage is read.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

#[derive(Debug)]
enum Obj {
    None,
    Bool(bool),
    Int(i64),
    /// A float, a byte string or a long integer: state dicts carry them only in
    /// metadata.
    Opaque,
    Str(Box<str>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Global(Box<(String, String)>),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorRef>),
}

impl Obj {
    /// What the value is, in a few words, for error messages. Never recursive: a
    /// container is described by its kind and length only.
    fn describe(&self) -> String {
        match self {
            Obj::None => "None".into(),
            Obj::Bool(b) => format!("the bool {b}"),
            Obj::Int(i) => format!("the integer {i}"),
            Obj::Opaque => "a float or byte string".into(),
            Obj::Str(s) => {
                let short: String = s.chars().take(40).collect();
                format!("the string {short:?}")
            }
            Obj::Tuple(v) => format!("a tuple of {}", v.len()),
            Obj::List(v) => format!("a list of {}", v.len()),
            Obj::Dict(v) => format!("a dict of {}", v.len()),
            Obj::Global(g) => format!("{}.{}", g.0, g.1),
            Obj::Storage(_) => "a storage".into(),
            Obj::Tensor(_) => "a tensor".into(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Mark,
    Val(Id),
}

/// The values every pickle of one file builds, and what they have cost so far.
struct Arena<'l> {
    objs: Vec<Obj>,
    depth: Vec<u32>,
    items: usize,
    string_bytes: usize,
    limits: &'l Limits,
    /// Element type of every storage a persistent id named, by key (the legacy
    /// format lists storages by key only).
    storage_dtypes: HashMap<String, DType>,
}

impl<'l> Arena<'l> {
    fn new(limits: &'l Limits) -> Self {
        Arena {
            objs: Vec::new(),
            depth: Vec::new(),
            items: 0,
            string_bytes: 0,
            limits,
            storage_dtypes: HashMap::new(),
        }
    }

    fn add(&mut self, o: Obj) -> Result<Id> {
        if self.objs.len() >= self.limits.max_pickle_values {
            return Err(over("values", self.limits.max_pickle_values));
        }
        let depth = match &o {
            Obj::Tuple(v) | Obj::List(v) => {
                1 + v.iter().map(|&i| self.depth[i as usize]).max().unwrap_or(0)
            }
            Obj::Dict(v) => {
                1 + v
                    .iter()
                    .map(|&(k, x)| self.depth[k as usize].max(self.depth[x as usize]))
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        };
        self.check_depth(depth)?;
        self.objs.push(o);
        self.depth.push(depth);
        Ok((self.objs.len() - 1) as Id)
    }

    fn check_depth(&self, depth: u32) -> Result<()> {
        if depth as usize > self.limits.max_pickle_depth {
            return Err(over("levels of nesting", self.limits.max_pickle_depth));
        }
        Ok(())
    }

    /// Charges `n` container slots.
    fn charge_items(&mut self, n: usize) -> Result<()> {
        self.items = self.items.saturating_add(n);
        if self.items > self.limits.max_pickle_items {
            return Err(over("container items", self.limits.max_pickle_items));
        }
        Ok(())
    }

    fn charge_string(&mut self, n: usize) -> Result<()> {
        self.string_bytes = self.string_bytes.saturating_add(n);
        if self.string_bytes > self.limits.max_pickle_string_bytes {
            return Err(over(
                "bytes of strings",
                self.limits.max_pickle_string_bytes,
            ));
        }
        Ok(())
    }

    fn get(&self, id: Id) -> &Obj {
        &self.objs[id as usize]
    }

    fn int(&self, id: Id) -> Result<i64> {
        match self.get(id) {
            Obj::Int(i) => Ok(*i),
            Obj::Bool(b) => Ok(*b as i64),
            other => Err(bad(format!(
                "expected an integer, found {}",
                other.describe()
            ))),
        }
    }

    fn usize(&self, id: Id, what: &str) -> Result<usize> {
        let i = self.int(id)?;
        usize::try_from(i).map_err(|_| bad(format!("negative {what} {i}")))
    }

    fn usizes(&self, id: Id, what: &str) -> Result<Vec<usize>> {
        match self.get(id) {
            Obj::Tuple(v) | Obj::List(v) => v.iter().map(|&x| self.usize(x, what)).collect(),
            other => Err(bad(format!(
                "expected a {what} tuple, found {}",
                other.describe()
            ))),
        }
    }

    fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Appends `item` to the container `target` (APPEND / SETITEM), keeping the
    /// recorded depth an upper bound for the container itself.
    fn note_child(&mut self, target: Id, child_depth: u32) -> Result<()> {
        let d = &mut self.depth[target as usize];
        if child_depth + 1 > *d {
            *d = child_depth + 1;
        }
        let d = *d;
        self.check_depth(d)
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

/// One pickle program's run over `data` from `pos`, building values in `arena`.
struct Unpickler<'a, 'r, 'l> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Id>,
    arena: &'r mut Arena<'l>,
}

impl<'a, 'r, 'l> Unpickler<'a, 'r, 'l> {
    fn new(data: &'a [u8], pos: usize, arena: &'r mut Arena<'l>) -> Self {
        Unpickler {
            data,
            pos,
            stack: Vec::new(),
            memo: HashMap::new(),
            arena,
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

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    /// A length field of 4 or 8 bytes, checked against what is left of the pickle.
    fn len(&mut self, wide: bool) -> Result<usize> {
        let n = if wide {
            u64::from_le_bytes(self.bytes()?)
        } else {
            u64::from(self.u32()?)
        };
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .ok_or_else(|| bad("truncated pickle"))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .take(256)
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("truncated or overlong pickle line"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        self.arena.charge_string(n)?;
        Ok(s)
    }

    fn push(&mut self, o: Obj) -> Result<()> {
        let id = self.arena.add(o)?;
        self.push_id(id)
    }

    fn push_id(&mut self, id: Id) -> Result<()> {
        // Every push but DUP and memo gets consumes pickle bytes; the stack is
        // bounded by the item budget as well, so DUP cannot grow it without limit.
        if self.stack.len() >= self.arena.limits.max_pickle_items {
            return Err(over("stack entries", self.arena.limits.max_pickle_items));
        }
        self.stack.push(Slot::Val(id));
        Ok(())
    }

    fn pop(&mut self) -> Result<Id> {
        match self.stack.pop() {
            Some(Slot::Val(id)) => Ok(id),
            Some(Slot::Mark) => Err(bad("unexpected mark on the pickle stack")),
            None => Err(bad("pickle stack underflow")),
        }
    }

    fn top(&self) -> Result<Id> {
        match self.stack.last() {
            Some(Slot::Val(id)) => Ok(*id),
            Some(Slot::Mark) => Err(bad("unexpected mark on the pickle stack")),
            None => Err(bad("pickle stack underflow")),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>> {
        let m = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Slot::Mark))
            .ok_or_else(|| bad("pickle mark missing"))?;
        let items = self
            .stack
            .split_off(m + 1)
            .into_iter()
            .map(|s| match s {
                Slot::Val(id) => id,
                Slot::Mark => unreachable!("the last mark is at m"),
            })
            .collect();
        self.stack.pop();
        Ok(items)
    }

    fn memo_put(&mut self, i: u32) -> Result<()> {
        let v = self.top()?;
        if self.memo.len() >= self.arena.limits.max_pickle_values && !self.memo.contains_key(&i) {
            return Err(over("memo entries", self.arena.limits.max_pickle_values));
        }
        self.memo.insert(i, v);
        Ok(())
    }

    fn memo_get(&mut self, i: u32) -> Result<()> {
        let v = *self
            .memo
            .get(&i)
            .ok_or_else(|| bad(format!("unknown memo entry {i}")))?;
        self.push_id(v)
    }

    fn utf8(&mut self, n: usize) -> Result<()> {
        self.arena.charge_string(n)?;
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| bad("invalid utf-8 string"))?;
        self.push(Obj::Str(s.into()))
    }

    fn opaque(&mut self, n: usize) -> Result<()> {
        self.take(n)?;
        self.push(Obj::Opaque)
    }

    fn container(&mut self, items: Vec<Id>, tuple: bool) -> Result<()> {
        self.arena.charge_items(items.len())?;
        self.push(if tuple {
            Obj::Tuple(items)
        } else {
            Obj::List(items)
        })
    }

    fn pairs(&self, items: Vec<Id>) -> Result<Vec<(Id, Id)>> {
        if !items.len().is_multiple_of(2) {
            return Err(bad("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
    }

    fn append(&mut self, items: Vec<Id>) -> Result<()> {
        let target = self.top()?;
        self.arena.charge_items(items.len())?;
        let deepest = items
            .iter()
            .map(|&i| self.arena.depth[i as usize])
            .max()
            .unwrap_or(0);
        match &mut self.arena.objs[target as usize] {
            Obj::List(l) => l.extend(items),
            other => {
                return Err(bad(format!(
                    "APPEND to {}, which is not a list",
                    other.describe()
                )))
            }
        }
        self.arena.note_child(target, deepest)
    }

    fn set_items(&mut self, items: Vec<Id>) -> Result<()> {
        let target = self.top()?;
        let pairs = self.pairs(items)?;
        self.arena.charge_items(pairs.len() * 2)?;
        let deepest = pairs
            .iter()
            .map(|&(k, v)| self.arena.depth[k as usize].max(self.arena.depth[v as usize]))
            .max()
            .unwrap_or(0);
        match &mut self.arena.objs[target as usize] {
            Obj::Dict(d) => d.extend(pairs),
            other => {
                return Err(bad(format!(
                    "SETITEM on {}, which is not a dict",
                    other.describe()
                )))
            }
        }
        self.arena.note_child(target, deepest)
    }

    /// A persistent id: `('storage', storage_type, key, location, numel[, view])`.
    fn persistent(&mut self, pid: Id) -> Result<Obj> {
        let a = &*self.arena;
        let Obj::Tuple(t) = a.get(pid) else {
            return Err(bad(format!(
                "unexpected persistent id {}",
                a.get(pid).describe()
            )));
        };
        let (kind, ty, key) = match t.as_slice() {
            [kind, ty, key, _location, _numel, ..] => (*kind, *ty, *key),
            _ => return Err(bad("short persistent id")),
        };
        if a.str(kind) != Some("storage") {
            return Err(bad("a persistent id that is not a storage"));
        }
        let Obj::Global(g) = a.get(ty) else {
            return Err(bad("a storage without a storage type"));
        };
        let dtype = storage_dtype(&g.1)?;
        let key = a
            .str(key)
            .ok_or_else(|| bad("a storage key that is not a string"))?
            .to_string();
        // The legacy format's storage views: `(view_key, offset, size)` into the root.
        let (view_offset, view_len) = match t.get(5).map(|&v| a.get(v)) {
            None | Some(Obj::None) => (0, None),
            Some(Obj::Tuple(v)) if v.len() == 3 => (
                a.usize(v[1], "storage view offset")?,
                Some(a.usize(v[2], "storage view size")?),
            ),
            Some(other) => {
                return Err(bad(format!(
                    "unsupported storage view {}",
                    other.describe()
                )))
            }
        };
        if let Some(prev) = self.arena.storage_dtypes.insert(key.clone(), dtype) {
            if prev != dtype {
                return Err(bad(format!(
                    "storage `{key}` is named with two element types, {prev:?} and {dtype:?}"
                )));
            }
        }
        Ok(Obj::Storage(Box::new(StorageRef {
            key,
            dtype,
            view_offset,
            view_len,
        })))
    }

    /// REDUCE / NEWOBJ: only the callables state dicts use. Returns the result's id
    /// (a parameter is its tensor, shared, not a copy).
    fn reduce(&mut self, f: Id, args: Id) -> Result<Id> {
        let a = &*self.arena;
        let Obj::Global(g) = a.get(f) else {
            return Err(bad(format!("cannot call {}", a.get(f).describe())));
        };
        let Obj::Tuple(args) = a.get(args) else {
            return Err(bad(format!("bad arguments {}", a.get(args).describe())));
        };
        match (g.0.as_str(), g.1.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                let [storage, offset, size, stride, ..] = args.as_slice() else {
                    return Err(bad("short _rebuild_tensor arguments"));
                };
                let Obj::Storage(s) = a.get(*storage) else {
                    return Err(bad("tensor without storage"));
                };
                let t = TensorRef {
                    storage: (**s).clone(),
                    offset: a.usize(*offset, "storage offset")?,
                    size: a.usizes(*size, "size")?,
                    stride: a.usizes(*stride, "stride")?,
                };
                if t.size.len() != t.stride.len() {
                    return Err(bad("size and stride ranks differ"));
                }
                if t.size.len() > MAX_RANK {
                    return Err(bad(format!(
                        "a tensor of rank {}: more than {MAX_RANK} dimensions",
                        t.size.len()
                    )));
                }
                self.arena.add(Obj::Tensor(Box::new(t)))
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => match args.first() {
                Some(&data) if matches!(a.get(data), Obj::Tensor(_)) => Ok(data),
                _ => Err(bad("_rebuild_parameter without a tensor")),
            },
            ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
                self.arena.add(Obj::Dict(Vec::new()))
            }
            ("torch", "device") => self.arena.add(Obj::None),
            (module, name) => Err(bad(format!("refusing to call {module}.{name}"))),
        }
    }

    /// Runs until STOP and returns the value it leaves.
    fn run(&mut self) -> Result<Id> {
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
                b'(' => {
                    if self.stack.len() >= self.arena.limits.max_pickle_items {
                        return Err(over("stack entries", self.arena.limits.max_pickle_items));
                    }
                    self.stack.push(Slot::Mark)
                }
                b'}' => self.push(Obj::Dict(Vec::new()))?,
                b']' => self.push(Obj::List(Vec::new()))?,
                b')' => self.push(Obj::Tuple(Vec::new()))?,
                b'N' => self.push(Obj::None)?,
                0x88 => self.push(Obj::Bool(true))?,
                0x89 => self.push(Obj::Bool(false))?,
                b'K' => {
                    let v = self.u8()?;
                    self.push(Obj::Int(v.into()))?
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.bytes()?);
                    self.push(Obj::Int(v.into()))?
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.bytes()?);
                    self.push(Obj::Int(v.into()))?
                }
                0x8a | 0x8b => {
                    // LONG1 / LONG4: little-endian two's complement of n bytes.
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        self.len(false)?
                    };
                    self.arena.charge_string(n)?;
                    let b = self.take(n)?;
                    if n > 8 {
                        // Wider than 64 bits: state dicts carry none (the legacy
                        // format's magic number is checked byte by byte).
                        self.push(Obj::Opaque)?;
                        continue;
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.push(Obj::Int(i64::from_le_bytes(buf)))?
                }
                b'G' => self.opaque(8)?,
                b'X' | b'T' => {
                    // BINUNICODE / BINSTRING
                    let n = self.len(false)?;
                    self.utf8(n)?
                }
                0x8d => {
                    // BINUNICODE8
                    let n = self.len(true)?;
                    self.utf8(n)?
                }
                0x8c | b'U' => {
                    // SHORT_BINUNICODE / SHORT_BINSTRING
                    let n = self.u8()? as usize;
                    self.utf8(n)?
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.opaque(n)?
                }
                b'B' => {
                    let n = self.len(false)?;
                    self.opaque(n)?
                }
                0x8e => {
                    let n = self.len(true)?;
                    self.opaque(n)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Obj::Global(Box::new((module, name))))?
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (self.arena.str(module), self.arena.str(name)) {
                        (Some(m), Some(n)) => {
                            let g = Obj::Global(Box::new((m.to_string(), n.to_string())));
                            self.push(g)?
                        }
                        _ => return Err(bad("STACK_GLOBAL without two strings")),
                    }
                }
                b'q' => {
                    let i = self.u8()?.into();
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len())
                        .map_err(|_| over("memo entries", u32::MAX as usize))?;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()?.into();
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.container(items, true)?
                }
                0x85..=0x87 => {
                    // TUPLE1..3
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(bad("pickle stack underflow"));
                    }
                    let mut items = vec![0; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    self.container(items, true)?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.container(items, false)?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.arena.charge_items(pairs.len() * 2)?;
                    self.push(Obj::Dict(pairs))?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.push(v)?
                }
                b'R' | 0x81 => {
                    // REDUCE: f(*args); NEWOBJ: cls.__new__(cls, *args)
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args)?;
                    self.push_id(v)?
                }
                b'b' => {
                    // BUILD: state for dicts (`_metadata`) and parameters is not needed.
                    self.pop()?;
                    self.top()?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?;
                    self.push_id(v)?
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
