use attrib_core::{Attribution, AttributionMap, LayerTap, Result, Scalar, Target};
use ndarray::ArrayView4;

use crate::parts::{layer_map, layer_pass, relu_in_place};

/// LayerCAM (Jiang et al. 2021): every position weighted by its own positive
/// gradient, `ReLU(sum_k ReLU(dS/dA^k_ij) A^k_ij)`, `(N, h, w)`. pytorch-grad-cam's
/// `LayerCAM` (raw map).
#[derive(Debug, Clone, Default)]
pub struct LayerCam {
    layer: Option<String>,
}

crate::layer_builder!(LayerCam);

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for LayerCam {
    fn name(&self) -> &'static str {
        "layer-cam"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let (layer, tap, out) = layer_pass(model, input, target, self.layer.as_deref())?;
        let weighted = tap.gradient.mapv(|g| g.max(F::zero())) * &tap.activation;
        let mut cam = weighted.sum_axis(ndarray::Axis(1));
        relu_in_place(&mut cam);
        Ok(layer_map(cam, layer, &out))
    }
}
