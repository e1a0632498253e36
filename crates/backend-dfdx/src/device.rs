//! The two things a device must provide for attrib's ops: moving buffers between the
//! device and the host kernels, and running dfdx's tape backwards.

use std::borrow::Cow;

use crate::Network;
use attrib_core::Scalar;
use dfdx::shapes::{HasShape, Rank0};
use dfdx::tensor::{Cpu, Gradients, OwnedTape, Storage, Tensor, TensorFromVec};
use dfdx::tensor_ops::Backward;

mod sealed {
    use std::cell::Cell;

    /// Per-thread scratch buffers (im2col matrices, Winograd tiles) kept between
    /// calls, so that a layer does not zero-fill megabytes it is about to overwrite;
    /// and a branch-free select for the kernels' loops.
    pub trait Sealed: Sized {
        /// Takes this thread's scratch buffer (empty if another call holds it).
        fn take_scratch() -> Vec<Self>;
        /// Returns a scratch buffer, keeping the larger of it and what is there.
        fn put_scratch(v: Vec<Self>);
        /// `if take { a } else { b }` written with bit masks, a form the compiler
        /// vectorises (a plain `if` in a loop it leaves scalar).
        fn pick(take: bool, a: Self, b: Self) -> Self;
    }

    macro_rules! scratch {
        ($t:ty, $name:ident, $bits:ty) => {
            thread_local! {
                static $name: Cell<Vec<$t>> = const { Cell::new(Vec::new()) };
            }
            impl Sealed for $t {
                fn take_scratch() -> Vec<Self> {
                    $name.with(Cell::take)
                }
                fn put_scratch(v: Vec<Self>) {
                    $name.with(|c| {
                        let old = c.take();
                        c.set(if old.len() > v.len() { old } else { v });
                    })
                }
                #[inline(always)]
                fn pick(take: bool, a: Self, b: Self) -> Self {
                    let mask = (take as $bits).wrapping_neg();
                    <$t>::from_bits((a.to_bits() & mask) | (b.to_bits() & !mask))
                }
            }
        };
    }
    scratch!(f32, SCRATCH_F32, u32);
    scratch!(f64, SCRATCH_F64, u64);
}

/// Element types the backend computes in: `f32` and `f64` (gemm and dfdx support
/// exactly these; sealed so the kernels' gemm dispatch cannot meet another type).
pub trait Elem: Scalar + dfdx::dtypes::Dtype + sealed::Sealed {}

impl Elem for f32 {}
impl Elem for f64 {}

/// Runs `f` on this thread's scratch buffer of at least `len` values (contents
/// unspecified), then keeps the buffer for the next call on this thread. A nested
/// call (a rayon task stolen while `f` waits) gets a buffer of its own.
pub(crate) fn with_scratch<E: Elem, R>(len: usize, f: impl FnOnce(&mut [E]) -> R) -> R {
    let mut buf = E::take_scratch();
    if buf.len() < len {
        buf.resize(len, E::zero());
    }
    let r = f(&mut buf[..len]);
    E::put_scratch(buf);
    r
}

/// A dfdx device attrib can run networks on.
///
/// The ops run their kernels on host slices; a device moves gradient buffers to and
/// from the host and executes the tape. On [`Cpu`] the moves are free (the buffers
/// *are* host vectors). The GPU does not come through here: dfdx's tensors cannot hold
/// another crate's device buffers, so [`crate::gpu`] runs the same networks with its
/// own executor.
pub trait KernelDevice<E: Elem>: Storage<E> + TensorFromVec<E> {
    /// Moves a gradient buffer out to the host, leaving it empty: each intermediate
    /// gradient is consumed once, by the op that produced the tensor, so taking it
    /// frees memory as the backward pass proceeds (as PyTorch does).
    fn take_host(v: &mut Self::Vec) -> Result<Vec<E>, Self::Err>;

    /// Copies a buffer to the host without consuming it.
    fn read_host(v: &Self::Vec) -> Result<Vec<E>, Self::Err>;

    /// `v += src`, elementwise.
    fn add_host(v: &mut Self::Vec, src: &[E]) -> Result<(), Self::Err> {
        Self::accumulate(v, |d| d.iter_mut().zip(src).for_each(|(a, &b)| *a += b))
    }

    /// Runs `f` on the buffer as a host slice, keeping what it writes: in place on
    /// the CPU, through a host copy elsewhere.
    fn accumulate(v: &mut Self::Vec, f: impl FnOnce(&mut [E])) -> Result<(), Self::Err>;

    /// A 4-d tensor's values on the host: borrowed where the device's buffer is host
    /// memory in standard layout, copied otherwise.
    fn host<'a>(t: &'a Tensor<(usize, usize, usize, usize), E, Self>) -> Cow<'a, [E]> {
        Cow::Owned(t.as_vec())
    }

    /// Runs the tape of a scalar loss backwards.
    fn run_backward(
        loss: Tensor<Rank0, E, Self, OwnedTape<E, Self>>,
    ) -> Result<Gradients<E, Self>, Self::Err>;

    /// Runs one whole pass (forward, backward, activations) of `net`: in place by
    /// default; the CPU moves it onto a thread of the current rayon pool.
    fn run_pass<R: Send>(
        net: &Network<E, Self>,
        pass: impl FnOnce(&Network<E, Self>) -> R + Send,
    ) -> R
    where
        Self: Sized,
    {
        pass(net)
    }
}

impl<E: Elem> KernelDevice<E> for Cpu {
    fn take_host(v: &mut Self::Vec) -> Result<Vec<E>, Self::Err> {
        Ok(std::mem::take(&mut **v))
    }

    fn read_host(v: &Self::Vec) -> Result<Vec<E>, Self::Err> {
        Ok((**v).clone())
    }

    fn run_backward(
        loss: Tensor<Rank0, E, Self, OwnedTape<E, Self>>,
    ) -> Result<Gradients<E, Self>, Self::Err> {
        loss.try_backward()
    }

    fn accumulate(v: &mut Self::Vec, f: impl FnOnce(&mut [E])) -> Result<(), Self::Err> {
        f(&mut v[..]);
        Ok(())
    }

    /// Called from outside the pool, every parallel loop of the kernels would hand
    /// its work to the pool and put the caller to sleep until it is done: a pair of
    /// thread wake-ups per kernel, 20% of ResNet-18's saliency at batch 1 (84.5 ->
    /// 66.2 ms single-threaded). From a pool thread the loops split work by stealing.
    fn run_pass<R: Send>(
        net: &Network<E, Self>,
        pass: impl FnOnce(&Network<E, Self>) -> R + Send,
    ) -> R {
        if rayon::current_thread_index().is_some() {
            pass(net)
        } else {
            rayon::scope(|_| pass(net))
        }
    }

    fn host<'a>(t: &'a Tensor<(usize, usize, usize, usize), E, Self>) -> Cow<'a, [E]> {
        let (n, c, h, w) = *t.shape();
        let numel = n * c * h * w;
        if numel == 0 {
            return Cow::Owned(Vec::new());
        }
        // dfdx exposes the buffer only element by element. Borrow it whole when the
        // elements sit at the standard strides (tensors made from vectors always do;
        // a permuted or broadcast view does not and is copied through `as_vec`).
        let first: &E = &t[[0, 0, 0, 0]];
        let base = first as *const E as usize;
        let at = |i: [usize; 4]| {
            (&t[i] as *const E as usize).wrapping_sub(base) / std::mem::size_of::<E>()
        };
        let standard = (n < 2 || at([1, 0, 0, 0]) == c * h * w)
            && (c < 2 || at([0, 1, 0, 0]) == h * w)
            && (h < 2 || at([0, 0, 1, 0]) == w)
            && (w < 2 || at([0, 0, 0, 1]) == 1)
            && at([n - 1, c - 1, h - 1, w - 1]) == numel - 1;
        if !standard {
            return Cow::Owned(t.as_vec());
        }
        // SAFETY: the elements from `first` to the last index are one allocation (the
        // tensor's Vec, alive while `t` is borrowed), at consecutive addresses: the
        // first and last are numel - 1 apart and every axis has the standard stride.
        Cow::Borrowed(unsafe { std::slice::from_raw_parts(first as *const E, numel) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::tensor::TensorFromVec;

    #[test]
    fn cpu_tensors_are_borrowed_not_copied() {
        let dev = Cpu::default();
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let t = dev.tensor_from_vec(v.clone(), (2usize, 3usize, 2usize, 2usize));
        let h = <Cpu as KernelDevice<f32>>::host(&t);
        assert!(matches!(h, Cow::Borrowed(_)));
        assert_eq!(&*h, &v[..]);
    }
}
