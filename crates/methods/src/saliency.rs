use attrib_core::{
    Attribution, AttributionMap, MapLayout, Model, Rectifier, Result, Scalar, Target,
};
use ndarray::ArrayView4;

use crate::parts::{input_gradient, map, max_abs_over_channels};

/// Image-specific class saliency (Simonyan et al. 2014): `M_ij = max_c |dS/dI_cij|`,
/// `(N, H, W)`. Captum's `Saliency(abs=True)` followed by a max over channels.
#[derive(Debug, Clone, Copy, Default)]
pub struct Saliency;

impl<F: Scalar, M: Model<F> + ?Sized> Attribution<F, M> for Saliency {
    fn name(&self) -> &'static str {
        "saliency"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let (g, out) = input_gradient(model, input, target, Rectifier::Gradient)?;
        Ok(map(max_abs_over_channels(&g), MapLayout::Pixel, &out))
    }
}
