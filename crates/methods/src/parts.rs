//! The steps methods share, public so that a method written in another crate needs
//! no copies: one backward pass for the input gradient or for a layer's activation
//! and gradient, the layer to use, channel-weighted sums, `ReLU`, and wrapping values
//! into an [`AttributionMap`] with what was explained. `hires_cam.rs` is a whole
//! method in a dozen lines of these.

use attrib_core::{
    AttributionMap, BackwardOutput, BackwardRequest, LayerTap, MapLayout, Model, Rectifier, Result,
    Scalar, Target,
};
use ndarray::{Array3, Array4, ArrayView4, Axis, IntoDimension, Zip};

/// One backward pass for the input gradient under `rule`.
pub fn input_gradient<F: Scalar, M: Model<F> + ?Sized>(
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
    rule: Rectifier,
) -> Result<(Array4<F>, BackwardOutput<F>)> {
    backward_with_input_gradient(model, &BackwardRequest::input_gradient(input, target, rule))
}

/// Runs `req`, which asks for the input gradient, and takes that gradient out of the
/// result.
pub fn backward_with_input_gradient<F: Scalar, M: Model<F> + ?Sized>(
    model: &M,
    req: &BackwardRequest<'_, F>,
) -> Result<(Array4<F>, BackwardOutput<F>)> {
    let mut out = model.backward(req)?;
    let grad = out.input_grad.take().ok_or_else(|| {
        attrib_core::Error::Backend(
            "the model returned no input gradient although it was asked for".into(),
        )
    })?;
    Ok((grad, out))
}

/// The layer to use: the one named, checked, or the model's default.
pub fn layer_or_default<F: Scalar, M: LayerTap<F> + ?Sized>(
    model: &M,
    layer: Option<&str>,
) -> Result<String> {
    match layer {
        Some(name) => model.check_layer(name).map(|l| l.name),
        None => Ok(model.default_layer()),
    }
}

/// `sum_k weights[n, k] * A[n, k]` over channels: `(N, C, h, w) x (N, C) -> (N, h, w)`.
pub fn weighted_channel_sum<F: Scalar>(
    acts: &Array4<F>,
    weights: &ndarray::Array2<F>,
) -> Array3<F> {
    let (n, _, h, w) = acts.dim();
    let mut out = Array3::zeros((n, h, w));
    for (b, mut plane) in out.outer_iter_mut().enumerate() {
        for (k, a) in acts.index_axis(Axis(0), b).outer_iter().enumerate() {
            let wk = weights[[b, k]];
            Zip::from(&mut plane)
                .and(&a)
                .for_each(|o, &v| *o = *o + wk * v);
        }
    }
    out
}

/// Wraps method output with what was explained.
pub fn map<F: Scalar, D: ndarray::Dimension>(
    values: ndarray::Array<F, D>,
    layout: MapLayout,
    out: &BackwardOutput<F>,
) -> AttributionMap<F> {
    AttributionMap {
        values: values.into_dyn(),
        layout,
        classes: out.target.classes.clone(),
        scores: out.scores.clone(),
    }
}

/// `max_c |g|`: `(N, C, H, W) -> (N, H, W)`.
pub fn max_abs_over_channels<F: Scalar>(g: &Array4<F>) -> Array3<F> {
    let (n, _, h, w) = g.dim();
    let mut out = Array3::zeros((n, h, w).into_dimension());
    for (b, mut plane) in out.outer_iter_mut().enumerate() {
        for ch in g.index_axis(Axis(0), b).outer_iter() {
            Zip::from(&mut plane)
                .and(&ch)
                .for_each(|o: &mut F, &v: &F| *o = o.max(v.abs()));
        }
    }
    out
}

/// One backward pass for the activation and gradient at `layer` (the model's default
/// when `None`): what the gradient-weighted CAM variants need.
pub fn layer_pass<F: Scalar, M: LayerTap<F> + ?Sized>(
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
    layer: Option<&str>,
) -> Result<(String, attrib_core::TapOutput<F>, BackwardOutput<F>)> {
    let layer = layer_or_default(model, layer)?;
    let mut out = model.backward(&BackwardRequest::tap(input, target, &layer))?;
    let pos = out
        .taps
        .iter()
        .position(|t| t.name == layer)
        .ok_or_else(|| attrib_core::Error::Backend(format!("no tap `{layer}` returned")))?;
    let tap = out.taps.swap_remove(pos);
    Ok((layer, tap, out))
}

/// One forward pass for the scores `(N, K)` and the activation `(N, C, h, w)` at
/// `layer`: what the gradient-free CAM variants need.
pub fn layer_activation<F: Scalar, M: LayerTap<F> + ?Sized>(
    model: &M,
    input: ArrayView4<F>,
    layer: &str,
) -> Result<(ndarray::Array2<F>, Array4<F>)> {
    let (scores, mut acts) = model.activations(input, &[layer.to_string()])?;
    let a = acts.pop().ok_or_else(|| {
        attrib_core::Error::Backend(format!("no activation returned for `{layer}`"))
    })?;
    Ok((scores, a))
}

/// `(N, C, h, w)` summed over `h, w`: `(N, C)`.
pub fn spatial_sum<F: Scalar>(a: &Array4<F>) -> ndarray::Array2<F> {
    a.sum_axis(Axis(3)).sum_axis(Axis(2))
}

/// `ReLU` in place: pytorch-grad-cam applies it to every CAM before normalising.
pub fn relu_in_place<F: Scalar>(m: &mut Array3<F>) {
    m.mapv_inplace(|v| v.max(F::zero()));
}

/// A layer map from a method's values, with what was explained.
pub fn layer_map<F: Scalar>(
    cam: Array3<F>,
    layer: String,
    out: &BackwardOutput<F>,
) -> AttributionMap<F> {
    map(cam, MapLayout::Layer { name: layer }, out)
}

/// The most values one stacked batch of perturbed copies may hold (2^28: 1 GiB of
/// f32): beyond it a method asks for a smaller batch instead of failing to allocate.
pub const MAX_BATCH_VALUES: usize = 1 << 28;

/// Checks that `rows` copies of `per_row` values fit in [`MAX_BATCH_VALUES`]; the
/// error names `what` (the setting that sizes the batch).
pub fn check_batch_size(rows: usize, per_row: usize, what: &str) -> Result<()> {
    match rows.checked_mul(per_row) {
        Some(v) if v <= MAX_BATCH_VALUES => Ok(()),
        _ => Err(attrib_core::Error::param(
            what,
            format!(
                "{rows} copies of {per_row} values exceed the {MAX_BATCH_VALUES} values one pass may hold; use a smaller batch"
            ),
        )),
    }
}
