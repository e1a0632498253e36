use ndarray::{Array1, Array2, Array4, ArrayView4};

use crate::target::ResolvedTarget;
use crate::{Error, Rectifier, Result, Scalar, Target};

/// One backward pass: everything a gradient-based method needs, asked for at once.
///
/// Saliency asks for the input gradient; Grad-CAM asks for one tap and no input
/// gradient, so the backend may stop the backward pass at the tap; guided backprop
/// asks for the input gradient under [`Rectifier::Guided`]. No attribution pass needs
/// weight gradients, and backends must not compute them.
#[derive(Debug, Clone)]
pub struct BackwardRequest<'a, F: Scalar> {
    /// The batch, NCHW.
    pub input: ArrayView4<'a, F>,
    /// What to explain.
    pub target: &'a Target<F>,
    /// How every rectifier passes gradients back.
    pub rectifier: Rectifier,
    /// Layers whose activation and gradient to return, by name.
    pub taps: Vec<String>,
    /// Whether to return the gradient with respect to the input.
    pub input_grad: bool,
}

impl<'a, F: Scalar> BackwardRequest<'a, F> {
    /// A request for the input gradient only.
    pub fn input_gradient(
        input: ArrayView4<'a, F>,
        target: &'a Target<F>,
        rectifier: Rectifier,
    ) -> Self {
        BackwardRequest {
            input,
            target,
            rectifier,
            taps: Vec::new(),
            input_grad: true,
        }
    }

    /// A request for one layer's activation and gradient, without the input gradient.
    pub fn tap(input: ArrayView4<'a, F>, target: &'a Target<F>, layer: &str) -> Self {
        BackwardRequest {
            input,
            target,
            rectifier: Rectifier::Gradient,
            taps: vec![layer.to_string()],
            input_grad: false,
        }
    }
}

/// A tapped layer's activation `A` and the gradient `dL/dA`, both `(N, C, h, w)`.
#[derive(Debug, Clone)]
pub struct TapOutput<F: Scalar> {
    /// The layer's name.
    pub name: String,
    /// The forward activation.
    pub activation: Array4<F>,
    /// The gradient of the explained quantity with respect to the activation.
    pub gradient: Array4<F>,
}

/// What one backward pass returns.
#[derive(Debug, Clone)]
pub struct BackwardOutput<F: Scalar> {
    /// The model's outputs `(N, K)` at the input (before softmax).
    pub scores: Array2<F>,
    /// The target made concrete: seed, explained values, classes.
    pub target: ResolvedTarget<F>,
    /// `dL/dI` `(N, C, H, W)` when asked for.
    pub input_grad: Option<Array4<F>>,
    /// The requested taps, in the order asked.
    pub taps: Vec<TapOutput<F>>,
}

impl<F: Scalar> BackwardOutput<F> {
    /// The tap named `name`.
    pub fn tap(&self, name: &str) -> Result<&TapOutput<F>> {
        self.taps
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::UnknownLayer {
                name: name.to_string(),
                valid: self.taps.iter().map(|t| t.name.clone()).collect(),
            })
    }

    /// The input gradient, or a clear error if it was not requested.
    pub fn input_gradient(&self) -> Result<&Array4<F>> {
        self.input_grad.as_ref().ok_or_else(|| {
            Error::Backend("the backward pass was asked without the input gradient".into())
        })
    }
}

/// A differentiable network: scores and one backward pass per request.
pub trait Model<F: Scalar> {
    /// The input shape the model was built for, `(C, H, W)`. Fully convolutional
    /// models accept other `H, W`; the channel count is always checked.
    fn input_shape(&self) -> [usize; 3];

    /// The number of outputs `K` (classes).
    fn num_outputs(&self) -> usize;

    /// Scores `(N, K)` before softmax.
    fn forward(&self, input: ArrayView4<F>) -> Result<Array2<F>>;

    /// One backward pass as described by `req`.
    fn backward(&self, req: &BackwardRequest<'_, F>) -> Result<BackwardOutput<F>>;

    /// Scores `(M, K)` for inputs that stand for items of the batch being explained:
    /// row `j` of `input` is a variant (an occluded copy, say) of item `items[j]`.
    /// A model conditioned on a query per item (a caption, a question) pairs each
    /// row with its item's query; any other model ignores `items` (the default).
    /// Methods that evaluate perturbed copies of the items call this, never
    /// [`Model::forward`], so they work on both kinds.
    fn forward_items(&self, input: ArrayView4<F>, items: &[usize]) -> Result<Array2<F>> {
        if items.len() != input.dim().0 {
            return Err(Error::shape(
                "items of the rows",
                input.dim().0,
                items.len(),
            ));
        }
        self.forward(input)
    }

    /// [`Model::backward`] for inputs that stand for items of the batch being
    /// explained (see [`Model::forward_items`]); the target's rows follow the input's.
    fn backward_items(
        &self,
        req: &BackwardRequest<'_, F>,
        items: &[usize],
    ) -> Result<BackwardOutput<F>> {
        if items.len() != req.input.dim().0 {
            return Err(Error::shape(
                "items of the rows",
                req.input.dim().0,
                items.len(),
            ));
        }
        self.backward(req)
    }
}

/// A tappable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The tap name (PyTorch module paths for the zoo models).
    pub name: String,
    /// What the layer computes (`conv2d`, `relu`, `batch_norm`, ...).
    pub kind: String,
    /// Output `(C, H, W)` for the model's nominal input shape.
    pub shape: [usize; 3],
    /// Whether the output has passed a rectifier (Grad-CAM's preferred maps).
    pub rectified: bool,
}

/// A global-average-pool + linear classifier head on a feature map: what CAM needs.
#[derive(Debug, Clone)]
pub struct LinearHead<F: Scalar> {
    /// The layer whose output is pooled.
    pub layer: String,
    /// Classifier weights `(K, C)`.
    pub weight: Array2<F>,
    /// Classifier bias `(K,)`.
    pub bias: Array1<F>,
}

/// A model whose intermediate layers can be tapped by name.
pub trait LayerTap<F: Scalar>: Model<F> {
    /// Every tappable layer, in forward order.
    fn layers(&self) -> Vec<LayerInfo>;

    /// The layer Grad-CAM uses when none is named: the last rectified conv map.
    fn default_layer(&self) -> String;

    /// Scores and the activations `(N, C, h, w)` of `layers`, from one forward pass
    /// with no backward: what CAM and feature extraction need.
    fn activations(
        &self,
        input: ArrayView4<F>,
        layers: &[String],
    ) -> Result<(Array2<F>, Vec<Array4<F>>)>;

    /// [`LayerTap::activations`] for inputs that stand for items of the batch being
    /// explained (see [`Model::forward_items`]): the scores pair row `j` with item
    /// `items[j]`'s query. The default ignores `items`, as [`Model::forward_items`]
    /// does.
    fn activations_items(
        &self,
        input: ArrayView4<F>,
        layers: &[String],
        items: &[usize],
    ) -> Result<(Array2<F>, Vec<Array4<F>>)> {
        if items.len() != input.dim().0 {
            return Err(Error::shape(
                "items of the rows",
                input.dim().0,
                items.len(),
            ));
        }
        self.activations(input, layers)
    }

    /// The scores `(M, K)` of the model run from `layer` onwards with `activations`
    /// `(M, C, h, w)` in place of that layer's output, row `j` standing for item
    /// `items[j]` of `input` (whose values below the layer feed any branch that
    /// bypasses it). What Ablation-CAM needs: the part below the layer runs once.
    /// Models that cannot do this say so (the default).
    fn forward_from(
        &self,
        input: ArrayView4<F>,
        layer: &str,
        activations: ArrayView4<F>,
        items: &[usize],
    ) -> Result<Array2<F>> {
        let _ = (input, activations, items);
        Err(Error::unsupported(
            "running from a layer",
            format!("this model cannot be run from `{layer}` with replaced activations"),
        ))
    }

    /// The GAP + linear head, if the network ends in one (needed by CAM).
    fn linear_head(&self) -> Option<LinearHead<F>> {
        None
    }

    /// Whether a rectifier lies between `layer` and the output. When none does, the
    /// gradient at `layer` is the same under every [`Rectifier`] rule, so one guided
    /// backward pass yields both Grad-CAM's gradient and guided backprop's (Guided
    /// Grad-CAM then needs one forward and one backward instead of two of each).
    /// The default, `true`, is always correct: it only forgoes that saving.
    fn rectifiers_above(&self, layer: &str) -> Result<bool> {
        self.check_layer(layer).map(|_| true)
    }

    /// `name` if the model has that layer, [`Error::UnknownLayer`] listing the valid
    /// names otherwise.
    fn check_layer(&self, name: &str) -> Result<LayerInfo> {
        let layers = self.layers();
        layers
            .iter()
            .find(|l| l.name == name)
            .cloned()
            .ok_or_else(|| Error::UnknownLayer {
                name: name.to_string(),
                valid: layers.into_iter().map(|l| l.name).collect(),
            })
    }
}

/// A boxed model is the model: so a program can choose the device (or backend) at run
/// time and hand `Box<dyn LayerTap<F>>` to any method. Every method forwards,
/// including the ones with defaults, so the inner model's own answers are kept.
impl<F: Scalar, M: Model<F> + ?Sized> Model<F> for Box<M> {
    fn input_shape(&self) -> [usize; 3] {
        (**self).input_shape()
    }

    fn num_outputs(&self) -> usize {
        (**self).num_outputs()
    }

    fn forward(&self, input: ArrayView4<F>) -> Result<Array2<F>> {
        (**self).forward(input)
    }

    fn backward(&self, req: &BackwardRequest<'_, F>) -> Result<BackwardOutput<F>> {
        (**self).backward(req)
    }

    fn forward_items(&self, input: ArrayView4<F>, items: &[usize]) -> Result<Array2<F>> {
        (**self).forward_items(input, items)
    }

    fn backward_items(
        &self,
        req: &BackwardRequest<'_, F>,
        items: &[usize],
    ) -> Result<BackwardOutput<F>> {
        (**self).backward_items(req, items)
    }
}

impl<F: Scalar, M: LayerTap<F> + ?Sized> LayerTap<F> for Box<M> {
    fn layers(&self) -> Vec<LayerInfo> {
        (**self).layers()
    }

    fn default_layer(&self) -> String {
        (**self).default_layer()
    }

    fn activations(
        &self,
        input: ArrayView4<F>,
        layers: &[String],
    ) -> Result<(Array2<F>, Vec<Array4<F>>)> {
        (**self).activations(input, layers)
    }

    fn activations_items(
        &self,
        input: ArrayView4<F>,
        layers: &[String],
        items: &[usize],
    ) -> Result<(Array2<F>, Vec<Array4<F>>)> {
        (**self).activations_items(input, layers, items)
    }

    fn forward_from(
        &self,
        input: ArrayView4<F>,
        layer: &str,
        activations: ArrayView4<F>,
        items: &[usize],
    ) -> Result<Array2<F>> {
        (**self).forward_from(input, layer, activations, items)
    }

    fn linear_head(&self) -> Option<LinearHead<F>> {
        (**self).linear_head()
    }

    fn rectifiers_above(&self, layer: &str) -> Result<bool> {
        (**self).rectifiers_above(layer)
    }

    fn check_layer(&self, name: &str) -> Result<LayerInfo> {
        (**self).check_layer(name)
    }
}

/// Checks what every backend must reject before computing: an empty batch, the wrong
/// number of channels, a zero-sized image, and NaN or infinite values.
pub fn check_input<F: Scalar>(input: &ArrayView4<F>, channels: usize) -> Result<()> {
    let (n, c, h, w) = input.dim();
    if n == 0 {
        return Err(Error::EmptyBatch);
    }
    if c != channels || h == 0 || w == 0 {
        return Err(Error::shape(
            "input (N, C, H, W)",
            format!("(N, {channels}, H, W) with H, W > 0"),
            format!("({n}, {c}, {h}, {w})"),
        ));
    }
    if let Some((idx, v)) = input.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFiniteInput {
            index: [idx.0, idx.1, idx.2, idx.3],
            value: v.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn input_errors() {
        let x = Array4::<f32>::zeros((0, 3, 4, 4));
        assert_eq!(check_input(&x.view(), 3).unwrap_err(), Error::EmptyBatch);
        let x = Array4::<f32>::zeros((1, 1, 4, 4));
        let e = check_input(&x.view(), 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shape mismatch for input (N, C, H, W): expected (N, 3, H, W) with H, W > 0, got (1, 1, 4, 4)"
        );
        let mut x = Array4::<f32>::zeros((2, 3, 4, 4));
        x[[1, 2, 0, 3]] = f32::NAN;
        assert_eq!(
            check_input(&x.view(), 3).unwrap_err().to_string(),
            "non-finite input value NaN at [1, 2, 0, 3]"
        );
    }
}
