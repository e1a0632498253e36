use attrib_core::{
    Attribution, AttributionMap, BackwardOutput, BackwardRequest, LayerTap, MapLayout, Rectifier,
    Result, Scalar, TapOutput, Target,
};
use ndarray::{Array2, Array3, Array4, ArrayView4, Axis};

use crate::parts::{backward_with_input_gradient, layer_or_default, map, weighted_channel_sum};

/// Grad-CAM (Selvaraju et al.): `alpha_k = (1/Z) sum_ij dL/dA^k_ij`,
/// `L = ReLU(sum_k alpha_k A^k)`, `(N, h, w)` at the tapped layer (the model's
/// default layer, the last rectified conv map, unless one is named).
///
/// Matches Captum's `LayerGradCam(relu_attributions=True)`. The counterfactual
/// variant (paper, Sec. 5) uses the negated gradients, highlighting regions whose
/// removal would raise the score. One backward pass, stopped at the layer.
#[derive(Debug, Clone, Default)]
pub struct GradCam {
    layer: Option<String>,
    no_relu: bool,
    counterfactual: bool,
    per_channel: bool,
}

impl GradCam {
    /// Grad-CAM at the model's default layer.
    pub fn new() -> Self {
        GradCam::default()
    }

    /// Counterfactual Grad-CAM: gradients negated.
    pub fn counterfactual() -> Self {
        GradCam {
            counterfactual: true,
            ..GradCam::default()
        }
    }

    /// Taps `layer` instead of the default.
    pub fn layer(mut self, layer: impl Into<String>) -> Self {
        self.layer = Some(layer.into());
        self
    }

    /// Keeps the signed map (no final ReLU), e.g. to inspect negative evidence.
    pub fn without_relu(mut self) -> Self {
        self.no_relu = true;
        self
    }

    /// The map per channel, `alpha_k A^k` `(N, C, h, w)`, before the channel sum and
    /// the `ReLU` (`ReLU` of their sum over channels is Grad-CAM).
    pub fn per_channel(mut self) -> Self {
        self.per_channel = true;
        self
    }

    /// The layer asked for, if any.
    pub fn layer_name(&self) -> Option<&str> {
        self.layer.as_deref()
    }

    /// Computes the map and returns it with the tapped layer's name and the backward
    /// output (Guided Grad-CAM reuses both).
    pub(crate) fn compute<F: Scalar, M: LayerTap<F> + ?Sized>(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<(Array3<F>, String, BackwardOutput<F>)> {
        let layer = layer_or_default(model, self.layer.as_deref())?;
        let target = if self.counterfactual {
            target.negated()
        } else {
            target.clone()
        };
        let out = model.backward(&BackwardRequest::tap(input, &target, &layer))?;
        let cam = grad_cam_map(out.tap(&layer)?, !self.no_relu);
        Ok((cam, layer, out))
    }
}

/// Grad-CAM's map, the guided input gradient and the pass they came from.
pub(crate) type SharedPass<F> = (Array3<F>, Array4<F>, BackwardOutput<F>);

impl GradCam {
    /// Grad-CAM and the guided input gradient from one guided backward pass, when
    /// that is exact: the target is not negated (the guided pass explains the target
    /// itself) and no rectifier lies above the layer, so the layer's gradient does
    /// not depend on the rectifier rule. `None` otherwise.
    pub(crate) fn shared_guided_pass<F: Scalar, M: LayerTap<F> + ?Sized>(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<Option<SharedPass<F>>> {
        let layer = layer_or_default(model, self.layer.as_deref())?;
        if self.counterfactual || model.rectifiers_above(&layer)? {
            return Ok(None);
        }
        let req = BackwardRequest {
            taps: vec![layer.clone()],
            ..BackwardRequest::input_gradient(input, target, Rectifier::Guided)
        };
        let (guided, out) = backward_with_input_gradient(model, &req)?;
        let cam = grad_cam_map(out.tap(&layer)?, !self.no_relu);
        Ok(Some((cam, guided, out)))
    }
}

/// Grad-CAM's channel weights: the spatial means of the gradient, `(N, C)`.
fn channel_weights<F: Scalar>(tap: &TapOutput<F>) -> Array2<F> {
    let (n, c, _, _) = tap.gradient.dim();
    tap.gradient
        .mean_axis(Axis(3))
        .and_then(|g| g.mean_axis(Axis(2)))
        .unwrap_or_else(|| Array2::zeros((n, c)))
}

/// Grad-CAM from a tap: channel weights are the spatial means of the gradient.
pub(crate) fn grad_cam_map<F: Scalar>(tap: &TapOutput<F>, relu: bool) -> Array3<F> {
    let alpha = channel_weights(tap);
    let mut cam = weighted_channel_sum(&tap.activation, &alpha);
    if relu {
        cam.mapv_inplace(|v| v.max(F::zero()));
    }
    cam
}

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for GradCam {
    fn name(&self) -> &'static str {
        if self.counterfactual {
            "counterfactual-grad-cam"
        } else {
            "grad-cam"
        }
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        if self.per_channel {
            let layer = layer_or_default(model, self.layer.as_deref())?;
            let target = if self.counterfactual {
                target.negated()
            } else {
                target.clone()
            };
            let out = model.backward(&BackwardRequest::tap(input, &target, &layer))?;
            let tap = out.tap(&layer)?;
            let alpha = channel_weights(tap);
            let maps = &tap.activation * &alpha.insert_axis(Axis(2)).insert_axis(Axis(3));
            return Ok(map(maps, MapLayout::LayerChannels { name: layer }, &out));
        }
        let (cam, layer, out) = self.compute(model, input, target)?;
        Ok(map(cam, MapLayout::Layer { name: layer }, &out))
    }
}
