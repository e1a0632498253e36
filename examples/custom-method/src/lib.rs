//! A method written outside `attrib-methods`, the way a researcher adds one:
//! Element-wise Grad-CAM (pytorch-grad-cam's `GradCAMElementWise`), which keeps
//! Grad-CAM's gradient-times-activation products per position and rectifies them
//! before the channel sum: `sum_k ReLU(dS/dA^k ⊙ A^k)`.
//!
//! Three pieces: the method (an [`Attribution`] built from `attrib_methods::parts`),
//! its registry entry [`METHODS`] (name, help, parameters, constructor), and
//! `src/main.rs`, an `attrib` command that offers it next to the built-in methods.
//! `tests/kit.rs` runs the property kit on it with one call.

use attrib_core::{Attribution, AttributionMap, LayerTap, Result, Scalar, Target};
use attrib_methods::parts::{layer_map, layer_pass};
use attrib_methods::registry::{BoxedMethod, MethodInfo, Output, Params};
use ndarray::{ArrayView4, Axis};

/// Element-wise Grad-CAM at a layer (the model's default when none is given).
#[derive(Debug, Clone, Default)]
pub struct GradCamElementWise {
    layer: Option<String>,
}

attrib_methods::layer_builder!(GradCamElementWise);

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for GradCamElementWise {
    fn name(&self) -> &'static str {
        "grad-cam-elementwise"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        // One backward pass for the layer's activation and gradient.
        let (layer, tap, out) = layer_pass(model, input, target, self.layer.as_deref())?;
        let cam = (&tap.gradient * &tap.activation)
            .mapv(|v| v.max(F::zero()))
            .sum_axis(Axis(1));
        Ok(layer_map(cam, layer, &out))
    }
}

/// The registry entry that puts it in the `attrib` command: `--method
/// grad-cam-elementwise`, in the `cams` group, at `--layer`.
pub static METHODS: [MethodInfo; 1] = [MethodInfo {
    name: "grad-cam-elementwise",
    groups: &["cams"],
    about:
        "Element-wise Grad-CAM: sum_k ReLU(dS/dA^k * A^k) (pytorch-grad-cam's GradCAMElementWise)",
    reference: "Gildenblat et al., pytorch-grad-cam (GradCAMElementWise)",
    output: Output::Layer,
    at_layer: true,
    needs_linear_head: false,
    peaky: false,
    params: &[],
    build,
}];

fn build(p: &Params) -> Result<BoxedMethod> {
    let m = GradCamElementWise::new();
    Ok(Box::new(match p.layer() {
        Some(l) => m.layer(l),
        None => m,
    }))
}
