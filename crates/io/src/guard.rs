//! A wall around third-party decoders (zip, safetensors, png, jpeg): a panic inside
//! one on malformed input becomes an error naming the decoder, not a crash. Only
//! calls into those crates are wrapped: a panic in attrib's own readers is a bug to
//! find (the fuzzers abort on it), not to hide.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use attrib_core::{Error, Result};

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether this thread is inside a decoder guard: a panic hook can tell a third-party
/// decoder's panic, which becomes an error, from any other.
pub fn in_guard() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Runs `f`; a panic in it becomes the error `wrap` makes of a sentence naming
/// `what`. The decoders keep no state across calls, so nothing observes a value a
/// panic left half-built.
pub(crate) fn guarded<T>(
    what: &str,
    wrap: impl FnOnce(String) -> Error,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    DEPTH.with(|d| d.set(d.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    r.unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(wrap(format!(
            "{what} failed on malformed data (it panicked: {msg})"
        )))
    })
}
