use attrib_core::{Attribution, AttributionMap, LayerTap, Result, Scalar, Target};
use ndarray::{ArrayView4, Zip};

use crate::parts::{layer_map, layer_pass, relu_in_place, spatial_sum, weighted_channel_sum};

/// Grad-CAM++ (Chattopadhay et al. 2018): channel weights
/// `w_k = sum_ij ReLU(g_ij) a_ij` with `a_ij = g^2 / (2 g^2 + sum_ab A_ab g^3)` (Eq. 19;
/// `a = 0` where `g = 0`, `1e-6` added to the denominator), `g = dS/dA^k`; the map is
/// `ReLU(sum_k w_k A^k)`, `(N, h, w)` at the layer. pytorch-grad-cam's
/// `GradCAMPlusPlus`, whose raw map (before its normalisation and resizing) this
/// equals.
#[derive(Debug, Clone, Default)]
pub struct GradCamPlusPlus {
    layer: Option<String>,
}

crate::layer_builder!(GradCamPlusPlus);

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for GradCamPlusPlus {
    fn name(&self) -> &'static str {
        "grad-cam-plus-plus"
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
        let (n, c, _, _) = a.dim();
        let eps = F::of(1e-6);
        let mut w = ndarray::Array2::<F>::zeros((n, c));
        for b in 0..n {
            for k in 0..c {
                let s = sum_a[[b, k]];
                let mut acc = F::zero();
                Zip::from(g.slice(ndarray::s![b, k, .., ..])).for_each(|&gv| {
                    if gv != F::zero() {
                        let g2 = gv * gv;
                        let aij = g2 / (g2 + g2 + s * g2 * gv + eps);
                        acc = acc + gv.max(F::zero()) * aij;
                    }
                });
                w[[b, k]] = acc;
            }
        }
        let mut cam = weighted_channel_sum(a, &w);
        relu_in_place(&mut cam);
        Ok(layer_map(cam, layer, &out))
    }
}
