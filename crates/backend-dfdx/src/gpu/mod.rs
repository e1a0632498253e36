//! The GPU path: attrib's networks run by CUDA kernels.
//!
//! dfdx 0.13's own CUDA device (cudarc 0.9) links libcuda, cuBLAS and NVRTC at link
//! time, compiles its kernels with nvcc in its build script, and cannot host attrib's
//! ops without copying every buffer to the host (its tensors can only be made inside
//! dfdx). So the GPU path keeps the *network* of this crate — the same layers, the
//! same folding of batch norm and fusing of rectifiers ([`Network::plan_step`]), the
//! same taps and rules, the same [`Model`] and [`LayerTap`] answers — and executes it
//! with its own small executor ([`GpuNetwork`]) over a [`GpuApi`]: buffers, a kernel
//! launch by name and a gemm. The kernels are CUDA C ([`KERNELS`]), compiled by NVRTC
//! at run time; the `cuda` feature adds `CudaApi`, on cudarc 0.19 with dynamic
//! loading, so the crate builds with no CUDA installed anywhere. The methods do not
//! change: they see a [`LayerTap`].
//!
//! The one ABI of the kernels (`Args`) also lets the `attrib-gpu-emu` test crate
//! compile the same source as C++ and run it on the host, so every kernel and the
//! executor are checked against the CPU backend in CI, without a GPU.
//!
//! [`Network::plan_step`]: crate::Network
//! [`Model`]: attrib_core::Model
//! [`LayerTap`]: attrib_core::LayerTap

mod exec;

#[cfg(feature = "cuda")]
mod cuda;

#[cfg(feature = "cuda")]
pub use cuda::{nvrtc_compile, CudaApi};
pub use exec::GpuNetwork;

use attrib_core::Result;

/// The CUDA C source of every kernel.
pub const KERNELS: &str = include_str!("kernels.cu");

/// The kernels' one argument block: pointers, then integers (`i[0]` is the number of
/// threads). Its layout is `struct Args` in [`KERNELS`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Args {
    /// Device addresses of the buffers, in the kernel's order.
    pub p: [u64; 6],
    /// Integer arguments; `i[0]` is the thread count.
    pub i: [i64; 24],
}

impl Args {
    /// Arguments for `threads` threads, with `ptrs` and then `ints` after the count.
    pub fn new(threads: usize, ptrs: &[u64], ints: &[i64]) -> Self {
        let mut a = Args::default();
        a.p[..ptrs.len()].copy_from_slice(ptrs);
        a.i[0] = threads as i64;
        a.i[1..=ints.len()].copy_from_slice(ints);
        a
    }

    /// The number of threads the launch runs.
    pub fn threads(&self) -> usize {
        self.i[0] as usize
    }
}

/// Threads per block of every launch.
pub const BLOCK: u32 = 256;

/// A row-major single-precision product `C = op(A) op(B) + beta C` (`alpha = 1`):
/// `C` is `m x n`, `op(A)` `m x k`, `op(B)` `k x n`; leading dimensions are row
/// strides of the matrices as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// Address of `A`.
    pub a: u64,
    /// Row stride of `A` as stored.
    pub lda: usize,
    /// Whether `A` is stored transposed (`k x m`).
    pub trans_a: bool,
    /// Address of `B`.
    pub b: u64,
    /// Row stride of `B` as stored.
    pub ldb: usize,
    /// Whether `B` is stored transposed (`n x k`).
    pub trans_b: bool,
    /// Address of `C`.
    pub c: u64,
    /// Row stride of `C`.
    pub ldc: usize,
    /// 0 overwrites `C`, 1 adds to it.
    pub beta: f32,
}

/// What the executor needs from a GPU: buffers of `f32`, kernel launches by name with
/// an [`Args`] block, and a gemm. Work is issued in order (one stream); `download`
/// waits for it.
pub trait GpuApi: Send + Sync + 'static {
    /// A device buffer; dropping it frees the memory.
    type Buf: Send + Sync;

    /// The device, in words (for reports).
    fn describe(&self) -> String;

    /// A buffer of `len` values, their contents unspecified: the executor writes every
    /// element of what it allocates before reading it (so no time goes to zero-filling;
    /// the host emulator fills new buffers with NaN to check that it does).
    fn alloc(&self, len: usize) -> Result<Self::Buf>;

    /// A buffer holding `data`.
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;

    /// The buffer's values on the host, after all issued work.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;

    /// The buffer's device address, for [`Args`] and [`Gemm`].
    fn ptr(&self, buf: &Self::Buf) -> u64;

    /// Runs kernel `name` of [`KERNELS`] with `args.threads()` threads in blocks of
    /// [`BLOCK`].
    ///
    /// # Safety
    /// The pointers in `args` address live buffers large enough for what the kernel
    /// reads and writes for these integer arguments.
    unsafe fn launch(&self, name: &'static str, args: &Args) -> Result<()>;

    /// Runs `g`.
    ///
    /// # Safety
    /// The addresses in `g` are live buffers holding the matrices as described.
    unsafe fn gemm(&self, g: &Gemm) -> Result<()>;

    /// Bytes of device memory in use at the peak so far, if the device tracks it.
    fn peak_bytes(&self) -> Option<usize> {
        None
    }
}

/// Every kernel [`KERNELS`] defines, in source order: the names a [`GpuApi`] must
/// resolve (checked by the tests against the source).
pub const KERNEL_NAMES: &[&str] = &[
    "copy_add",
    "add_act",
    "rectify",
    "rectifier_back",
    "affine",
    "affine_back",
    "bias_rows",
    "im2col",
    "col2im",
    "onp_to_nchw",
    "nchw_to_onp",
    "depthwise",
    "depthwise_back",
    "max_pool",
    "max_pool_back",
    "avg_pool",
    "avg_pool_back",
    "adaptive_avg",
    "adaptive_avg_back",
    "gather_rows",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_are_the_sources() {
        let defined: Vec<&str> = KERNELS
            .lines()
            .filter_map(|l| l.strip_prefix("KERNEL(")?.split(')').next())
            .collect();
        assert_eq!(defined, KERNEL_NAMES);
    }

    #[test]
    fn args_layout_is_the_kernels() {
        // struct Args { unsigned long long p[6]; long long i[24]; } with no padding.
        assert_eq!(std::mem::size_of::<Args>(), 6 * 8 + 24 * 8);
        assert!(KERNELS.contains("unsigned long long p[6];\n  long long i[24];"));
        let a = Args::new(7, &[1, 2], &[3, 4]);
        assert_eq!((a.threads(), a.p[1], a.i[2]), (7, 2, 4));
    }
}
