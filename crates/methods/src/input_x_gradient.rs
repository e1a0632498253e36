use attrib_core::{
    Attribution, AttributionMap, MapLayout, Model, Rectifier, Result, Scalar, Target,
};
use ndarray::ArrayView4;

use crate::parts::{input_gradient, map};

/// Input x Gradient (Shrikumar et al. 2016): `I * dS/dI`, `(N, C, H, W)`. Captum's
/// `InputXGradient`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InputXGradient;

impl<F: Scalar, M: Model<F> + ?Sized> Attribution<F, M> for InputXGradient {
    fn name(&self) -> &'static str {
        "input-x-gradient"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let (mut g, out) = input_gradient(model, input, target, Rectifier::Gradient)?;
        g.zip_mut_with(&input, |g, &x| *g = *g * x);
        Ok(map(g, MapLayout::Input, &out))
    }
}
