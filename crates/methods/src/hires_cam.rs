use attrib_core::{Attribution, AttributionMap, LayerTap, Result, Scalar, Target};
use ndarray::ArrayView4;

use crate::parts::{layer_map, layer_pass, relu_in_place};

/// HiResCAM (Draelos & Carin 2020): the gradient and activation multiplied at each
/// position, `ReLU(sum_k dS/dA^k_ij A^k_ij)`, `(N, h, w)`. pytorch-grad-cam's
/// `HiResCAM` (raw map). Where the gradient is constant over positions it equals
/// Grad-CAM times `Z = h w`.
#[derive(Debug, Clone, Default)]
pub struct HiResCam {
    layer: Option<String>,
}

crate::layer_builder!(HiResCam);

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for HiResCam {
    fn name(&self) -> &'static str {
        "hires-cam"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let (layer, tap, out) = layer_pass(model, input, target, self.layer.as_deref())?;
        let mut cam = (&tap.gradient * &tap.activation).sum_axis(ndarray::Axis(1));
        relu_in_place(&mut cam);
        Ok(layer_map(cam, layer, &out))
    }
}
