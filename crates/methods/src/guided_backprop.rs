use attrib_core::{
    Attribution, AttributionMap, MapLayout, Model, Rectifier, Result, Scalar, Target,
};
use ndarray::ArrayView4;

use crate::parts::{input_gradient, map};

/// Guided backpropagation (Springenberg et al. 2015): every rectifier passes
/// `R_l = (f_l in its linear region)(R_{l+1} > 0) R_{l+1}`. `(N, C, H, W)`; Captum's
/// `GuidedBackprop` (which patches only `nn.ReLU` modules; here every ReLU and ReLU6
/// op follows the rule).
#[derive(Debug, Clone, Copy, Default)]
pub struct GuidedBackprop;

impl<F: Scalar, M: Model<F> + ?Sized> Attribution<F, M> for GuidedBackprop {
    fn name(&self) -> &'static str {
        "guided-backprop"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let (g, out) = input_gradient(model, input, target, Rectifier::Guided)?;
        Ok(map(g, MapLayout::Input, &out))
    }
}
