#![no_main]

static HOOK: std::sync::Once = std::sync::Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HOOK.call_once(attrib_io::fuzzing::install_guard_aware_hook);
    attrib_io::fuzzing::run("pth_legacy", data)
});
