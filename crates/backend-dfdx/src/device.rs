//! The two things a device must provide for attrib's ops: moving buffers between the
//! device and the host kernels, and running dfdx's tape backwards.

use attrib_core::Scalar;
use dfdx::shapes::Rank0;
use dfdx::tensor::{Cpu, Gradients, OwnedTape, Storage, Tensor, TensorFromVec};
use dfdx::tensor_ops::Backward;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// Element types the backend computes in: `f32` and `f64` (gemm and dfdx support
/// exactly these; sealed so the kernels' gemm dispatch cannot meet another type).
pub trait Elem: Scalar + dfdx::dtypes::Dtype + sealed::Sealed {}

impl Elem for f32 {}
impl Elem for f64 {}

/// A dfdx device attrib can run networks on.
///
/// The ops run their kernels on host slices; a device moves gradient buffers to and
/// from the host and executes the tape. On [`Cpu`] the moves are free (the buffers
/// *are* host vectors); on CUDA they are copies.
pub trait KernelDevice<E: Elem>: Storage<E> + TensorFromVec<E> {
    /// Moves a gradient buffer out to the host, leaving it empty: each intermediate
    /// gradient is consumed once, by the op that produced the tensor, so taking it
    /// frees memory as the backward pass proceeds (as PyTorch does).
    fn take_host(v: &mut Self::Vec) -> Result<Vec<E>, Self::Err>;

    /// Copies a buffer to the host without consuming it.
    fn read_host(v: &Self::Vec) -> Result<Vec<E>, Self::Err>;

    /// `v += src`, elementwise.
    fn add_host(v: &mut Self::Vec, src: &[E]) -> Result<(), Self::Err>;

    /// Runs the tape of a scalar loss backwards.
    fn run_backward(
        loss: Tensor<Rank0, E, Self, OwnedTape<E, Self>>,
    ) -> Result<Gradients<E, Self>, Self::Err>;
}

impl<E: Elem> KernelDevice<E> for Cpu {
    fn take_host(v: &mut Self::Vec) -> Result<Vec<E>, Self::Err> {
        Ok(std::mem::take(&mut **v))
    }

    fn read_host(v: &Self::Vec) -> Result<Vec<E>, Self::Err> {
        Ok((**v).clone())
    }

    fn add_host(v: &mut Self::Vec, src: &[E]) -> Result<(), Self::Err> {
        if v.is_empty() {
            // A buffer already taken by its producer is only ever re-filled whole.
            v.extend_from_slice(src);
        } else {
            v.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
        }
        Ok(())
    }

    fn run_backward(
        loss: Tensor<Rank0, E, Self, OwnedTape<E, Self>>,
    ) -> Result<Gradients<E, Self>, Self::Err> {
        loss.try_backward()
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use dfdx::tensor::Cuda;

    macro_rules! cuda_device {
        ($t:ty) => {
            impl KernelDevice<$t> for Cuda {
                fn take_host(v: &mut Self::Vec) -> Result<Vec<$t>, Self::Err> {
                    Self::read_host(v)
                }

                fn read_host(v: &Self::Vec) -> Result<Vec<$t>, Self::Err> {
                    Ok((**v).device().dtoh_sync_copy(&**v)?)
                }

                fn add_host(v: &mut Self::Vec, src: &[$t]) -> Result<(), Self::Err> {
                    let mut host = Self::read_host(v)?;
                    host.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
                    let dev = (**v).device();
                    Ok(dev.htod_sync_copy_into(&host, &mut **v)?)
                }

                fn run_backward(
                    loss: Tensor<Rank0, $t, Self, OwnedTape<$t, Self>>,
                ) -> Result<Gradients<$t, Self>, Self::Err> {
                    loss.try_backward()
                }
            }
        };
    }

    cuda_device!(f32);
    cuda_device!(f64);
}
