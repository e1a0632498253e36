//! Compiles attrib-dfdx's CUDA kernels as C++ with the host emulation shim.
fn main() {
    let kernels = "../backend-dfdx/src/gpu";
    println!("cargo:rerun-if-changed={kernels}/kernels.cu");
    println!("cargo:rerun-if-changed=src/emu.cpp");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .include(kernels)
        .file("src/emu.cpp")
        .opt_level(2)
        // The kernels' own warnings are CUDA's to report (NVRTC in CI); here the
        // shim only has to compile them.
        .warnings(false)
        .compile("attrib_gpu_emu");
}
