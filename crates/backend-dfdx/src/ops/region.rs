//! Tape ops on regions of a feature map, for the FCLN (DenseCap) family: RoI Align
//! samples each box of the trunk's features into a fixed grid, and the gradient flows
//! back to the features (the boxes are constants, as in the paper's explanations).

use attrib_core::Result;
use dfdx::tensor::Tape;

use super::{dims, record, tensor4, with_tape, Tensor4};
use crate::kernels::{Roi, RoiAlign};
use crate::{Elem, KernelDevice};

pub(crate) fn roi_align_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    rois: &[Roi],
    op: RoiAlign,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let shape = dims(x);
    let [_, c, _, _] = shape;
    let mut y = vec![E::zero(); rois.len() * c * op.bins()];
    op.forward(shape, &D::host(x), rois, &mut y)?;
    let out = tensor4(x.device(), y, [rois.len(), c, op.out_h, op.out_w])?;
    let rois = rois.to_vec();
    record(tape, &out, &[x], move |dy, _, dx| {
        op.accumulate_backward(shape, &rois, dy, dx)
    });
    Ok(out)
}

/// RoI Align ([`RoiAlign`], torchvision's semantics) of the features `(N, C, H, W)`
/// for each of `rois`: `(K, C, out_h, out_w)`, with its gradient to the features on
/// the tape.
pub fn roi_align<E, D, T>(
    x: Tensor4<E, D, T>,
    rois: &[Roi],
    op: RoiAlign,
) -> Result<Tensor4<E, D, T>>
where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D>,
{
    with_tape(x, |x, tape| roi_align_op(x, rois, op, tape))
}
