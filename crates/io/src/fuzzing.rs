//! The fuzz targets, shared by `fuzz/` (cargo-fuzz, libFuzzer) and the quick
//! libFuzzer-free run in the test suite (`tests/fuzz_quick.rs`): each feeds arbitrary
//! bytes to one reader. A target passes when it returns, whatever the reader said;
//! a panic, an abort or a hang is a finding, except a panic inside a third-party
//! decoder that the readers' guard turns into an error ([`in_guard`] tells which).

use crate::Limits;

pub use crate::guard::in_guard;

/// The readers the targets exercise.
pub const TARGETS: [&str; 4] = ["weights", "npy", "image", "pth_legacy"];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    let limits = Limits::default();
    match name {
        // safetensors, zip and legacy checkpoints: the format is detected from the
        // bytes, as for a user's file.
        "weights" => {
            let _ = crate::WeightMap::from_bytes_with(data, &limits);
        }
        // The legacy format's pickles directly behind a valid magic number, so the
        // fuzzer spends its time in the pickle machine rather than on the signature.
        "pth_legacy" => {
            let mut file = LEGACY_MAGIC.to_vec();
            file.extend_from_slice(data);
            let _ = crate::WeightMap::from_bytes_with(&file, &limits);
        }
        "npy" => {
            let _ = crate::npy::from_bytes(data, "fuzz.npy", &limits);
        }
        #[cfg(feature = "images")]
        "image" => {
            let _ = crate::image::decode_rgb8(data, "fuzz", &limits);
        }
        _ => {}
    }
}

/// The legacy format's first pickle: protocol 2, the magic number, STOP.
pub const LEGACY_MAGIC: [u8; 15] = [
    0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];

/// Wraps the current panic hook (libFuzzer's, which aborts) so that a panic inside a
/// guarded third-party decoder prints one line and lets the guard turn it into an
/// error; any other panic goes to the wrapped hook. Call once per process.
pub fn install_guard_aware_hook() {
    let inner = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if in_guard() {
            eprintln!("guarded decoder panic (an error, not a crash): {info}");
        } else {
            inner(info);
        }
    }));
}
