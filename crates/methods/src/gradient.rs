use attrib_core::{
    Attribution, AttributionMap, MapLayout, Model, Rectifier, Result, Scalar, Target,
};
use ndarray::ArrayView4;

use crate::parts::{input_gradient, map};

/// The plain gradient `dL/dI` of the target with respect to the input, `(N, C, H, W)`.
/// Captum's `Saliency(abs=False)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gradient;

impl<F: Scalar, M: Model<F> + ?Sized> Attribution<F, M> for Gradient {
    fn name(&self) -> &'static str {
        "gradient"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let (g, out) = input_gradient(model, input, target, Rectifier::Gradient)?;
        Ok(map(g, MapLayout::Input, &out))
    }
}
