//! `attrib-gpu-emu` runs attrib's GPU path on the host: the CUDA C kernels of
//! [`attrib_dfdx::gpu::KERNELS`] compiled as C++ (`build.rs`), each launch's threads
//! run one after another, and the gemm as a plain loop. [`HostApi`] is a
//! [`GpuApi`], so [`GpuNetwork`](attrib_dfdx::gpu::GpuNetwork) runs on it unchanged:
//! the tests check every kernel and the executor against the CPU backend without a
//! GPU. What this cannot check is the device itself (NVRTC's code generation, cuBLAS,
//! launch limits): that is the device script's job (`tools/gpu/run.sh`).
//!
//! Not a backend for users: it is slow by design (serial threads, naive gemm).

use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use attrib_core::{Error, Result};
use attrib_dfdx::gpu::{Args, Gemm, GpuApi};

extern "C" {
    fn attrib_emu_launch(name: *const c_char, args: *const Args) -> c_int;
    fn attrib_emu_kernels() -> c_int;
}

/// The number of kernels the C++ build registered.
pub fn registered_kernels() -> usize {
    // SAFETY: reads a static map's size.
    unsafe { attrib_emu_kernels() as usize }
}

/// A host buffer addressed by raw pointer, as device memory is.
pub struct HostBuf {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the buffer is owned; writes go through kernels, which `HostApi` runs one at
// a time under its lock.
unsafe impl Send for HostBuf {}
unsafe impl Sync for HostBuf {}

impl HostBuf {
    fn new(data: Vec<f32>) -> Self {
        let b = data.into_boxed_slice();
        let len = b.len();
        HostBuf {
            ptr: Box::into_raw(b) as *mut f32,
            len,
        }
    }
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        // SAFETY: made from a boxed slice of `len` values in `new`.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

/// The emulated device (no memory statistics). Counts launches and gemms.
#[derive(Default)]
pub struct HostApi {
    lock: Mutex<()>,
    /// Kernel launches so far.
    pub launches: AtomicUsize,
    /// Gemm calls so far.
    pub gemms: AtomicUsize,
}

impl GpuApi for HostApi {
    type Buf = HostBuf;

    fn describe(&self) -> String {
        "host emulation".into()
    }

    fn alloc(&self, len: usize) -> Result<HostBuf> {
        // NaN, so that an element the executor reads before writing shows in the
        // results (on a GPU it would be whatever the memory held).
        Ok(HostBuf::new(vec![f32::NAN; len.max(1)]))
    }

    fn upload(&self, data: &[f32]) -> Result<HostBuf> {
        if data.is_empty() {
            return self.alloc(0);
        }
        Ok(HostBuf::new(data.to_vec()))
    }

    fn download(&self, buf: &HostBuf) -> Result<Vec<f32>> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `len` values from `ptr`, owned by `buf`; no kernel runs meanwhile.
        Ok(unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec())
    }

    fn ptr(&self, buf: &HostBuf) -> u64 {
        buf.ptr as u64
    }

    unsafe fn launch(&self, name: &'static str, args: &Args) -> Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.launches.fetch_add(1, Ordering::Relaxed);
        let c = CString::new(name).map_err(|e| Error::Backend(e.to_string()))?;
        // SAFETY: the caller guarantees the buffers (see `GpuApi::launch`).
        match unsafe { attrib_emu_launch(c.as_ptr(), args) } {
            0 => Ok(()),
            _ => Err(Error::Backend(format!("no kernel `{name}`"))),
        }
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        let _l = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.gemms.fetch_add(1, Ordering::Relaxed);
        let (a, b, c) = (g.a as *const f32, g.b as *const f32, g.c as *mut f32);
        // Element (i, p) of op(A) and (p, j) of op(B), as strides.
        let (ai, ap) = if g.trans_a { (1, g.lda) } else { (g.lda, 1) };
        let (bp, bj) = if g.trans_b { (1, g.ldb) } else { (g.ldb, 1) };
        for i in 0..g.m {
            for j in 0..g.n {
                let mut s = 0.0f32;
                for p in 0..g.k {
                    // SAFETY: the caller guarantees the matrices (see `GpuApi::gemm`).
                    s += unsafe { *a.add(i * ai + p * ap) * *b.add(p * bp + j * bj) };
                }
                // SAFETY: as above.
                unsafe {
                    let out = c.add(i * g.ldc + j);
                    *out = if g.beta == 0.0 { s } else { *out * g.beta + s };
                }
            }
        }
        Ok(())
    }
}
