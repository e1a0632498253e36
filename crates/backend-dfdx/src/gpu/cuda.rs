//! [`CudaApi`]: the [`GpuApi`] on an NVIDIA GPU, through cudarc 0.19 with dynamic
//! loading (libcuda, cuBLAS and NVRTC are opened at run time; nothing CUDA is needed
//! to build). The kernels are compiled from [`KERNELS`] by NVRTC once per process, for
//! the device's own architecture.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use attrib_core::{Error, Result};
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use super::{Args, Gemm, GpuApi, BLOCK, KERNELS, KERNEL_NAMES};

// SAFETY: `Args` is `repr(C)` plain data, the layout of the kernels' `struct Args`
// (checked by a test against the source), passed by value.
unsafe impl DeviceRepr for Args {}

fn err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Backend(format!("CUDA: {what}: {e:?}"))
}

/// Compiles [`KERNELS`] with NVRTC for `arch` (`compute_90`, say) and returns the PTX.
/// Needs only the NVRTC library, no GPU: CI runs this so that a kernel that does not
/// compile fails the build.
pub fn nvrtc_compile(arch: &'static str) -> Result<String> {
    let ptx = compile(arch)?;
    Ok(ptx.to_src())
}

fn compile(arch: &'static str) -> Result<Ptx> {
    // Full-precision division and square roots, no flush-to-zero: results must agree
    // with the CPU to 1e-4, not merely look alike.
    let opts = CompileOptions {
        arch: Some(arch),
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        name: Some("attrib_kernels.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(KERNELS, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => Error::Backend(format!(
            "NVRTC could not compile attrib's kernels: {}",
            log.to_string_lossy()
        )),
        other => err("NVRTC", other),
    })
}

/// The kernels' PTX for compute capability `major.minor`, compiled on first use and
/// kept for the process: every network and every device of one kind shares it.
fn cached_ptx(major: i32, minor: i32) -> Result<String> {
    static CACHE: Mutex<Vec<(i32, i32, String)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((.., ptx)) = cache.iter().find(|(a, b, _)| (*a, *b) == (major, minor)) {
        return Ok(ptx.clone());
    }
    // NVRTC wants the architecture as a static string; one leak per architecture.
    let arch: &'static str = Box::leak(format!("compute_{major}{minor}").into_boxed_str());
    let ptx = compile(arch)?.to_src();
    cache.push((major, minor, ptx.clone()));
    Ok(ptx)
}

/// A device buffer that counts itself in its device's memory statistics.
pub struct CudaBuf {
    slice: CudaSlice<f32>,
    bytes: usize,
    stats: Arc<Stats>,
}

impl Drop for CudaBuf {
    fn drop(&mut self) {
        self.stats.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Stats {
    live: AtomicUsize,
    peak: AtomicUsize,
}

/// One GPU, its stream, cuBLAS handle and the compiled kernels.
pub struct CudaApi {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    functions: HashMap<&'static str, CudaFunction>,
    stats: Arc<Stats>,
    name: String,
}

// SAFETY: cudarc's handles are thread-safe (the context is made current on each call,
// the stream serialises work); the cuBLAS handle is only used for calls on its
// stream, which the executor issues one pass at a time.
unsafe impl Send for CudaApi {}
unsafe impl Sync for CudaApi {}

impl CudaApi {
    /// Opens GPU `ordinal`, compiling the kernels for it (about a second, once).
    /// Fails with a clear error where the driver library is missing.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only probes for the library with dlopen.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Backend(
                "CUDA: libcuda.so (the NVIDIA driver) was not found on this machine".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| err("opening the GPU", e))?;
        // SAFETY: every buffer is allocated, used and freed on the one stream below, in
        // issue order, so the events cudarc would record per use order nothing (and
        // `ptr` would record one per kernel argument).
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| err("compute capability", e))?;
        let name = ctx.name().map_err(|e| err("device name", e))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| err("cuBLAS", e))?;
        let module = ctx
            .load_module(Ptx::from_src(cached_ptx(major, minor)?))
            .map_err(|e| err("loading the kernels", e))?;
        let functions = KERNEL_NAMES
            .iter()
            .map(|&n| {
                module
                    .load_function(n)
                    .map(|f| (n, f))
                    .map_err(|e| err(&format!("kernel `{n}`"), e))
            })
            .collect::<Result<_>>()?;
        Ok(CudaApi {
            ctx,
            stream,
            blas,
            functions,
            stats: Arc::default(),
            name: format!("{name} (sm_{major}{minor})"),
        })
    }

    fn count(&self, slice: CudaSlice<f32>) -> CudaBuf {
        let bytes = slice.len() * 4;
        let live = self.stats.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.stats.peak.fetch_max(live, Ordering::Relaxed);
        CudaBuf {
            slice,
            bytes,
            stats: self.stats.clone(),
        }
    }

    /// Waits for all issued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| err("synchronize", e))
    }

    /// Resets the peak of [`GpuApi::peak_bytes`] to the memory in use now.
    pub fn reset_peak(&self) {
        let live = self.stats.live.load(Ordering::Relaxed);
        self.stats.peak.store(live, Ordering::Relaxed);
    }

    /// The driver's view of device memory: `(free, total)` bytes.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(|e| err("memory info", e))
    }
}

impl GpuApi for CudaApi {
    type Buf = CudaBuf;

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn alloc(&self, len: usize) -> Result<CudaBuf> {
        // SAFETY: f32 has no invalid bit patterns, and the executor writes every
        // element before reading it (`GpuApi::alloc`).
        let s = unsafe { self.stream.alloc::<f32>(len.max(1)) }
            .map_err(|e| err(&format!("allocating {} MB", (len * 4) >> 20), e))?;
        Ok(self.count(s))
    }

    fn upload(&self, data: &[f32]) -> Result<CudaBuf> {
        if data.is_empty() {
            return self.alloc(0);
        }
        let s = self
            .stream
            .clone_htod(data)
            .map_err(|e| err("copy to the GPU", e))?;
        Ok(self.count(s))
    }

    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        let host = self
            .stream
            .clone_dtoh(&buf.slice)
            .map_err(|e| err("copy from the GPU", e))?;
        // A copy into pageable memory returns once it is done (CUDA's documented
        // semantics, which cudarc relies on); the explicit wait costs nothing then and
        // makes the values' arrival not depend on that.
        self.synchronize()?;
        Ok(host)
    }

    fn ptr(&self, buf: &CudaBuf) -> u64 {
        let (p, _sync) = buf.slice.device_ptr(&self.stream);
        p
    }

    unsafe fn launch(&self, name: &'static str, args: &Args) -> Result<()> {
        let f = self
            .functions
            .get(name)
            .ok_or_else(|| Error::Backend(format!("no GPU kernel `{name}`")))?;
        let blocks = args.threads().div_ceil(BLOCK as usize);
        if blocks > i32::MAX as usize {
            return Err(Error::Backend(format!(
                "kernel `{name}`: {} threads exceed one launch",
                args.threads()
            )));
        }
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(f);
        b.arg(args);
        // SAFETY: the caller guarantees the pointers and sizes (see `GpuApi::launch`).
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| err(&format!("kernel `{name}`"), e))
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        // cuBLAS is column-major: the row-major C = op(A) op(B) is the column-major
        // C^T = op(B)^T op(A)^T, i.e. the same call with A and B swapped.
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let int = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| Error::Backend(format!("gemm {what} {v} exceeds cuBLAS")))
        };
        let (alpha, beta) = (1.0f32, g.beta);
        // The raw cuBLAS call does not make the context current, as cudarc's own
        // calls do; a pass may run on any thread.
        self.ctx
            .bind_to_thread()
            .map_err(|e| err("binding the GPU to this thread", e))?;
        // SAFETY: the caller guarantees the matrices (see `GpuApi::gemm`).
        unsafe {
            blas::sgemm(
                *self.blas.handle(),
                op(g.trans_b),
                op(g.trans_a),
                int(g.n, "n")?,
                int(g.m, "m")?,
                int(g.k, "k")?,
                &alpha,
                g.b as *const f32,
                int(g.ldb, "ldb")?,
                g.a as *const f32,
                int(g.lda, "lda")?,
                &beta,
                g.c as *mut f32,
                int(g.ldc, "ldc")?,
            )
        }
        .map_err(|e| err("cuBLAS sgemm", e))
    }

    fn peak_bytes(&self) -> Option<usize> {
        Some(self.stats.peak.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    /// Where there is no NVIDIA driver (CI, most laptops), opening the GPU is an error
    /// that says so, not a crash in the loader.
    #[test]
    fn no_driver_is_a_clear_error() {
        // SAFETY: only probes for the library.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            eprintln!("skipped: this machine has a driver");
            return;
        }
        let e = super::CudaApi::new(0)
            .err()
            .expect("no GPU here")
            .to_string();
        assert!(
            e.contains("libcuda.so (the NVIDIA driver) was not found"),
            "{e}"
        );
    }

    /// The kernels compile with NVRTC (no GPU needed, only libnvrtc): run by CI with
    /// `ATTRIB_NVRTC=1` and the library of the `nvidia-cuda-nvrtc` wheel on the path;
    /// elsewhere it says why it did not run.
    #[test]
    fn kernels_compile_with_nvrtc() {
        if std::env::var_os("ATTRIB_NVRTC").is_none() {
            eprintln!("skipped: set ATTRIB_NVRTC=1 with libnvrtc.so.13 on LD_LIBRARY_PATH");
            return;
        }
        for arch in ["compute_80", "compute_90"] {
            let ptx = super::nvrtc_compile(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
            for name in super::KERNEL_NAMES {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{arch}: no entry `{name}`"
                );
            }
        }
    }
}
