use attrib_core::{
    Attribution, AttributionMap, MapLayout, Model, Rectifier, Result, Scalar, Target,
};
use ndarray::ArrayView4;

use crate::parts::{input_gradient, map};

/// Deconvnet (Zeiler & Fergus 2014) as a backward rule: every rectifier passes
/// `R_l = (R_{l+1} > 0) R_{l+1}`, max-pools route through their switches, everything
/// else is the transposed linear map. `(N, C, H, W)`; Captum's `Deconvolution`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deconvnet;

impl<F: Scalar, M: Model<F> + ?Sized> Attribution<F, M> for Deconvnet {
    fn name(&self) -> &'static str {
        "deconvnet"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let (g, out) = input_gradient(model, input, target, Rectifier::Deconvnet)?;
        Ok(map(g, MapLayout::Input, &out))
    }
}
