//! Steps several methods share.

use attrib_core::{
    AttributionMap, BackwardOutput, BackwardRequest, LayerTap, MapLayout, Model, Rectifier, Result,
    Scalar, Target,
};
use ndarray::{Array3, Array4, ArrayView4, Axis, IntoDimension, Zip};

/// One backward pass for the input gradient under `rule`.
pub(crate) fn input_gradient<F: Scalar, M: Model<F> + ?Sized>(
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
    rule: Rectifier,
) -> Result<(Array4<F>, BackwardOutput<F>)> {
    backward_with_input_gradient(model, &BackwardRequest::input_gradient(input, target, rule))
}

/// Runs `req`, which asks for the input gradient, and takes that gradient out of the
/// result.
pub(crate) fn backward_with_input_gradient<F: Scalar, M: Model<F> + ?Sized>(
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
pub(crate) fn layer_or_default<F: Scalar, M: LayerTap<F> + ?Sized>(
    model: &M,
    layer: Option<&str>,
) -> Result<String> {
    match layer {
        Some(name) => model.check_layer(name).map(|l| l.name),
        None => Ok(model.default_layer()),
    }
}

/// `sum_k weights[n, k] * A[n, k]` over channels: `(N, C, h, w) x (N, C) -> (N, h, w)`.
pub(crate) fn weighted_channel_sum<F: Scalar>(
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
pub(crate) fn map<F: Scalar, D: ndarray::Dimension>(
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
pub(crate) fn max_abs_over_channels<F: Scalar>(g: &Array4<F>) -> Array3<F> {
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
