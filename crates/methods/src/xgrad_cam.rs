use attrib_core::{Attribution, AttributionMap, LayerTap, Result, Scalar, Target};
use ndarray::ArrayView4;

use crate::parts::{layer_map, layer_pass, relu_in_place, spatial_sum, weighted_channel_sum};

/// XGrad-CAM (Fu et al. 2020): channel weights
/// `w_k = sum_ij (A^k_ij / (sum_ab A^k_ab + 1e-7)) dS/dA^k_ij`, the map
/// `ReLU(sum_k w_k A^k)`, `(N, h, w)`. pytorch-grad-cam's `XGradCAM` (raw map). Where
/// the gradient is constant over positions (a global average pool and a linear head
/// right after the layer) it equals Grad-CAM times `Z = h w`, up to the `1e-7`.
#[derive(Debug, Clone, Default)]
pub struct XGradCam {
    layer: Option<String>,
}

crate::layer_builder!(XGradCam);

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for XGradCam {
    fn name(&self) -> &'static str {
        "xgrad-cam"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let (layer, tap, out) = layer_pass(model, input, target, self.layer.as_deref())?;
        let (a, g) = (&tap.activation, &tap.gradient);
        let sum_a = spatial_sum(a);
        let mut w = spatial_sum(&(g * a));
        w.zip_mut_with(&sum_a, |v, &s| *v = *v / (s + F::of(1e-7)));
        let mut cam = weighted_channel_sum(a, &w);
        relu_in_place(&mut cam);
        Ok(layer_map(cam, layer, &out))
    }
}
