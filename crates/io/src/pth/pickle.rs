//! The pickle machine behind the `.pth` reader: values in one arena, referred to by
//! index, every resource counted against the [`Limits`]; only the callables state
//! dicts use are understood (see the parent module for the rules it keeps).

use std::collections::HashMap;

use attrib_core::Result;

use super::{bad, over, MAX_RANK};
use crate::limits::Limits;
use crate::tensors::DType;

/// An index into the arena.
pub(super) type Id = u32;

/// A storage as a persistent id names it: its key (the zip entry `data/<key>` or the
/// legacy format's storage key), element type, and for the legacy format's storage
/// views, where the view starts in its root storage and how many elements it has.
#[derive(Debug, Clone)]
pub(super) struct StorageRef {
    pub(super) key: String,
    pub(super) dtype: DType,
    pub(super) view_offset: usize,
    pub(super) view_len: Option<usize>,
}

/// A tensor as the pickle describes it, before its storage is read.
#[derive(Debug, Clone)]
pub(super) struct TensorRef {
    pub(super) storage: StorageRef,
    pub(super) offset: usize,
    pub(super) size: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

#[derive(Debug)]
pub(super) enum Obj {
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
    pub(super) fn describe(&self) -> String {
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
pub(super) enum Slot {
    Mark,
    Val(Id),
}

/// The values every pickle of one file builds, and what they have cost so far.
pub(super) struct Arena<'l> {
    objs: Vec<Obj>,
    depth: Vec<u32>,
    items: usize,
    string_bytes: usize,
    pub(super) limits: &'l Limits,
    /// Element type of every storage a persistent id named, by key (the legacy
    /// format lists storages by key only).
    pub(super) storage_dtypes: HashMap<String, DType>,
}

impl<'l> Arena<'l> {
    pub(super) fn new(limits: &'l Limits) -> Self {
        Arena {
            objs: Vec::new(),
            depth: Vec::new(),
            items: 0,
            string_bytes: 0,
            limits,
            storage_dtypes: HashMap::new(),
        }
    }

    pub(super) fn add(&mut self, o: Obj) -> Result<Id> {
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

    pub(super) fn check_depth(&self, depth: u32) -> Result<()> {
        if depth as usize > self.limits.max_pickle_depth {
            return Err(over("levels of nesting", self.limits.max_pickle_depth));
        }
        Ok(())
    }

    /// Charges `n` container slots.
    pub(super) fn charge_items(&mut self, n: usize) -> Result<()> {
        self.items = self.items.saturating_add(n);
        if self.items > self.limits.max_pickle_items {
            return Err(over("container items", self.limits.max_pickle_items));
        }
        Ok(())
    }

    pub(super) fn charge_string(&mut self, n: usize) -> Result<()> {
        self.string_bytes = self.string_bytes.saturating_add(n);
        if self.string_bytes > self.limits.max_pickle_string_bytes {
            return Err(over(
                "bytes of strings",
                self.limits.max_pickle_string_bytes,
            ));
        }
        Ok(())
    }

    pub(super) fn get(&self, id: Id) -> &Obj {
        &self.objs[id as usize]
    }

    pub(super) fn int(&self, id: Id) -> Result<i64> {
        match self.get(id) {
            Obj::Int(i) => Ok(*i),
            Obj::Bool(b) => Ok(*b as i64),
            other => Err(bad(format!(
                "expected an integer, found {}",
                other.describe()
            ))),
        }
    }

    pub(super) fn usize(&self, id: Id, what: &str) -> Result<usize> {
        let i = self.int(id)?;
        usize::try_from(i).map_err(|_| bad(format!("negative {what} {i}")))
    }

    pub(super) fn usizes(&self, id: Id, what: &str) -> Result<Vec<usize>> {
        match self.get(id) {
            Obj::Tuple(v) | Obj::List(v) => v.iter().map(|&x| self.usize(x, what)).collect(),
            other => Err(bad(format!(
                "expected a {what} tuple, found {}",
                other.describe()
            ))),
        }
    }

    pub(super) fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Appends `item` to the container `target` (APPEND / SETITEM), keeping the
    /// recorded depth an upper bound for the container itself.
    pub(super) fn note_child(&mut self, target: Id, child_depth: u32) -> Result<()> {
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
pub(super) struct Unpickler<'a, 'r, 'l> {
    data: &'a [u8],
    pub(super) pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Id>,
    arena: &'r mut Arena<'l>,
}

impl<'a, 'r, 'l> Unpickler<'a, 'r, 'l> {
    pub(super) fn new(data: &'a [u8], pos: usize, arena: &'r mut Arena<'l>) -> Self {
        Unpickler {
            data,
            pos,
            stack: Vec::new(),
            memo: HashMap::new(),
            arena,
        }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| bad("truncated pickle"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(super) fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    /// A length field of 4 or 8 bytes, checked against what is left of the pickle.
    pub(super) fn len(&mut self, wide: bool) -> Result<usize> {
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

    pub(super) fn line(&mut self) -> Result<String> {
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

    pub(super) fn push(&mut self, o: Obj) -> Result<()> {
        let id = self.arena.add(o)?;
        self.push_id(id)
    }

    pub(super) fn push_id(&mut self, id: Id) -> Result<()> {
        // Every push but DUP and memo gets consumes pickle bytes; the stack is
        // bounded by the item budget as well, so DUP cannot grow it without limit.
        if self.stack.len() >= self.arena.limits.max_pickle_items {
            return Err(over("stack entries", self.arena.limits.max_pickle_items));
        }
        self.stack.push(Slot::Val(id));
        Ok(())
    }

    pub(super) fn pop(&mut self) -> Result<Id> {
        match self.stack.pop() {
            Some(Slot::Val(id)) => Ok(id),
            Some(Slot::Mark) => Err(bad("unexpected mark on the pickle stack")),
            None => Err(bad("pickle stack underflow")),
        }
    }

    pub(super) fn top(&self) -> Result<Id> {
        match self.stack.last() {
            Some(Slot::Val(id)) => Ok(*id),
            Some(Slot::Mark) => Err(bad("unexpected mark on the pickle stack")),
            None => Err(bad("pickle stack underflow")),
        }
    }

    pub(super) fn pop_mark(&mut self) -> Result<Vec<Id>> {
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

    pub(super) fn memo_put(&mut self, i: u32) -> Result<()> {
        let v = self.top()?;
        if self.memo.len() >= self.arena.limits.max_pickle_values && !self.memo.contains_key(&i) {
            return Err(over("memo entries", self.arena.limits.max_pickle_values));
        }
        self.memo.insert(i, v);
        Ok(())
    }

    pub(super) fn memo_get(&mut self, i: u32) -> Result<()> {
        let v = *self
            .memo
            .get(&i)
            .ok_or_else(|| bad(format!("unknown memo entry {i}")))?;
        self.push_id(v)
    }

    pub(super) fn utf8(&mut self, n: usize) -> Result<()> {
        self.arena.charge_string(n)?;
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| bad("invalid utf-8 string"))?;
        self.push(Obj::Str(s.into()))
    }

    pub(super) fn opaque(&mut self, n: usize) -> Result<()> {
        self.take(n)?;
        self.push(Obj::Opaque)
    }

    pub(super) fn container(&mut self, items: Vec<Id>, tuple: bool) -> Result<()> {
        self.arena.charge_items(items.len())?;
        self.push(if tuple {
            Obj::Tuple(items)
        } else {
            Obj::List(items)
        })
    }

    pub(super) fn pairs(&self, items: Vec<Id>) -> Result<Vec<(Id, Id)>> {
        if !items.len().is_multiple_of(2) {
            return Err(bad("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
    }

    pub(super) fn append(&mut self, items: Vec<Id>) -> Result<()> {
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

    pub(super) fn set_items(&mut self, items: Vec<Id>) -> Result<()> {
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
    pub(super) fn persistent(&mut self, pid: Id) -> Result<Obj> {
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
    pub(super) fn reduce(&mut self, f: Id, args: Id) -> Result<Id> {
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
    pub(super) fn run(&mut self) -> Result<Id> {
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
