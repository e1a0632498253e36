//! Identities between methods that hold exactly (up to rounding) by their
//! definitions. Each check runs the methods involved and reports the largest
//! difference, relative to the size of the values compared, so tests (and
//! researchers validating a new backend or method) can assert on it.

use attrib_core::{Attribution, AttributionMap, Error, LayerTap, Model, Result, Scalar, Target};
use ndarray::{Array2, ArrayD, ArrayView4, Axis};

use crate::rows::ItemRows;
use crate::{
    Cam, Deconvnet, GradCam, Gradient, GuidedBackprop, GuidedGradCam, HiResCam,
    IntegratedGradients, NoiseKind, NoiseTunnel, Saliency, XGradCam,
};

/// The outcome of one identity check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Check {
    /// The identity checked.
    pub name: &'static str,
    /// `max |lhs - rhs|`.
    pub max_abs_diff: f64,
    /// `max |rhs|`, the scale the difference is judged against.
    pub scale: f64,
}

impl Check {
    /// `max_abs_diff / max(scale, 1e-30)`.
    pub fn relative(&self) -> f64 {
        self.max_abs_diff / self.scale.max(1e-30)
    }

    /// Whether the identity holds to `rtol` relative to the scale, with `atol` absolute
    /// slack for all-zero maps.
    pub fn holds(&self, rtol: f64, atol: f64) -> bool {
        self.max_abs_diff <= rtol * self.scale + atol
    }
}

/// Compares two arrays of the same shape.
pub fn compare<F: Scalar>(name: &'static str, lhs: &ArrayD<F>, rhs: &ArrayD<F>) -> Result<Check> {
    if lhs.shape() != rhs.shape() {
        return Err(Error::shape(
            name,
            format!("{:?}", rhs.shape()),
            format!("{:?}", lhs.shape()),
        ));
    }
    let max_abs_diff = lhs
        .iter()
        .zip(rhs)
        .map(|(a, b)| (*a - *b).as_f64().abs())
        .fold(0.0, f64::max);
    let scale = rhs.iter().map(|v| v.as_f64().abs()).fold(0.0, f64::max);
    Ok(Check {
        name,
        max_abs_diff,
        scale,
    })
}

/// On a GAP + linear head, Grad-CAM equals `ReLU(CAM) / Z`, `Z = h * w`.
pub fn grad_cam_is_relu_cam_over_z<F: Scalar, M: LayerTap<F> + ?Sized>(
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
) -> Result<Check> {
    let cam = Cam.attribute(model, input, target)?;
    let layer = model
        .linear_head()
        .map(|h| h.layer)
        .ok_or_else(|| Error::unsupported("cam", "no GAP + linear head"))?;
    let gc = GradCam::new()
        .layer(layer)
        .attribute(model, input, target)?;
    let z = F::of((cam.values.shape()[1] * cam.values.shape()[2]) as f64);
    let expected = cam.values.mapv(|v| v.max(F::zero()) / z);
    compare("grad-cam = relu(cam)/Z", &gc.values, &expected)
}

/// The mean of the raw CAM over positions equals the explained score minus the
/// classifier bias (for a class: `S_c - b_c`; for a seed: `seed · (S - b)`).
pub fn cam_mean_is_score_minus_bias<F: Scalar, M: LayerTap<F> + ?Sized>(
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
) -> Result<Check> {
    let head = model
        .linear_head()
        .ok_or_else(|| Error::unsupported("cam", "no GAP + linear head"))?;
    let cam = Cam.attribute(model, input, target)?;
    let resolved = target.resolve(cam.scores.view())?;
    let means = cam
        .spatial()?
        .mean_axis(Axis(2))
        .and_then(|m| m.mean_axis(Axis(1)));
    let means = means.ok_or_else(|| Error::shape("cam", "a non-empty map", "an empty map"))?;
    let expected =
        (&resolved.seed * &(&cam.scores - &head.bias.insert_axis(Axis(0)))).sum_axis(Axis(1));
    compare(
        "mean(cam) = score - bias",
        &means.into_dyn(),
        &expected.into_dyn(),
    )
}

/// Guided Grad-CAM is the product of guided backprop and upsampled Grad-CAM, for
/// `grad_cam`'s layer (whether or not the two share one backward pass).
pub fn guided_grad_cam_is_product<F: Scalar, M: LayerTap<F> + ?Sized>(
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
    grad_cam: &GradCam,
) -> Result<Check> {
    let ggc = GuidedGradCam::with_grad_cam(grad_cam.clone()).attribute(model, input, target)?;
    let gb = GuidedBackprop.attribute(model, input, target)?;
    let gc = grad_cam.attribute(model, input, target)?;
    let gb4 = gb.input_space()?;
    let (_, _, h, w) = gb4.dim();
    let up = attrib_core::resample::resize_bilinear(gc.spatial()?, h, w);
    let expected = &gb4 * &up.insert_axis(Axis(1));
    compare(
        "guided-grad-cam = guided * up(grad-cam)",
        &ggc.values,
        &expected.into_dyn(),
    )
}

/// Saliency is `max_c |gradient|`.
pub fn saliency_is_max_abs_gradient<F: Scalar, M: Model<F> + ?Sized>(
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
) -> Result<Check> {
    let sal = Saliency.attribute(model, input, target)?;
    let g = Gradient.attribute(model, input, target)?;
    let expected = g
        .input_space()?
        .mapv(|v| v.abs())
        .fold_axis(Axis(1), F::zero(), |a, &b| a.max(b));
    compare(
        "saliency = max_c |gradient|",
        &sal.values,
        &expected.into_dyn(),
    )
}

/// Explaining a batch gives the same maps as explaining each item alone.
pub fn batch_equals_items<F: Scalar, M: ?Sized, A: Attribution<F, M> + ?Sized>(
    method: &A,
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
) -> Result<Check> {
    let n = input.dim().0;
    let batch = method.attribute(model, input, target)?;
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let one = method.attribute(
            model,
            input.slice(ndarray::s![i..i + 1, .., .., ..]),
            &target.slice(i, i + 1, n)?,
        )?;
        items.push(one.values);
    }
    let views: Vec<_> = items.iter().map(|a| a.view()).collect();
    let stacked = ndarray::concatenate(Axis(0), &views)
        .map_err(|e| Error::shape("per-item maps", "equal shapes", e))?;
    compare("batch = items", &batch.values, &stacked)
}

/// A seed equal to a one-hot row explains the same as the class target.
pub fn one_hot_seed_is_class<F: Scalar, M: ?Sized, A: Attribution<F, M> + ?Sized>(
    method: &A,
    model: &M,
    input: ArrayView4<F>,
    class: usize,
    num_outputs: usize,
) -> Result<Check> {
    let n = input.dim().0;
    let mut seed = Array2::zeros((n, num_outputs));
    if class >= num_outputs {
        return Err(Error::ClassOutOfRange {
            class,
            item: 0,
            num_classes: num_outputs,
        });
    }
    seed.column_mut(class).fill(F::one());
    let a = method.attribute(model, input, &Target::Seed(seed))?;
    let b = method.attribute(model, input, &Target::Class(class))?;
    compare("seed(one-hot) = class", &a.values, &b.values)
}

/// For networks of convolutions and rectifiers without max-pool, deconvnet does not
/// depend on the input (the backward never reads the forward pass). Compares two
/// inputs under the same fixed seed.
pub fn deconvnet_ignores_input<F: Scalar, M: Model<F> + ?Sized>(
    model: &M,
    a: ArrayView4<F>,
    b: ArrayView4<F>,
    seed: &Array2<F>,
) -> Result<Check> {
    let target = Target::Seed(seed.clone());
    let da: AttributionMap<F> = Deconvnet.attribute(model, a, &target)?;
    let db: AttributionMap<F> = Deconvnet.attribute(model, b, &target)?;
    compare("deconvnet(a) = deconvnet(b)", &da.values, &db.values)
}

/// Completeness (Sundararajan et al. 2017, Proposition 1): integrated gradients sum,
/// per item, to `S(x) - S(b)`, the explained score at the input minus at the
/// baseline (a top-predicted target pinned to the input's class). Exact for the
/// integral; `ig`'s quadrature leaves an error that shrinks with its steps, so judge
/// the check with a tolerance.
pub fn integrated_gradients_completeness<F: Scalar, M: Model<F> + ?Sized>(
    ig: &IntegratedGradients,
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
) -> Result<Check> {
    let scores = model.forward(input)?;
    let target = target.pinned(scores.view())?;
    let map = ig.attribute(model, input, &target)?;
    let (n, c, h, w) = input.dim();
    let sums = map
        .values
        .into_shape_with_order((n, c * h * w))
        .map_err(|e| Error::Backend(e.to_string()))?
        .sum_axis(Axis(1));
    let base = input.mapv(|_| F::of(ig.baseline_value()));
    let at_base = model.forward(base.view())?;
    let delta = &target.resolve(scores.view())?.values - &target.resolve(at_base.view())?.values;
    compare(
        "sum(integrated gradients) = S(x) - S(baseline)",
        &sums.into_dyn(),
        &delta.into_dyn(),
    )
}

/// When the gradient at the layer is constant over positions, as it is with global
/// average pooling and a linear head right after the layer, HiResCAM (Draelos &
/// Carin) and XGrad-CAM (Fu et al.) both reduce to Grad-CAM: HiResCAM's
/// elementwise `dS/dA^k ⊙ A^k` is Grad-CAM's `alpha_k A^k`, and XGrad-CAM's
/// activation-weighted average of a constant gradient is that constant. Returns the
/// two checks (XGrad-CAM's `1e-7` in its denominator, as pytorch-grad-cam has it,
/// leaves a difference of that order relative to a channel's activation sum).
pub fn hires_and_xgrad_are_grad_cam_under_gap<F: Scalar, M: LayerTap<F> + ?Sized>(
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
) -> Result<[Check; 2]> {
    let layer = model
        .linear_head()
        .map(|h| h.layer)
        .ok_or_else(|| Error::unsupported("hires-cam", "no GAP + linear head"))?;
    let gc = GradCam::new()
        .layer(layer.clone())
        .attribute(model, input, target)?;
    let hr = HiResCam::new()
        .layer(layer.clone())
        .attribute(model, input, target)?;
    let xg = XGradCam::new()
        .layer(layer)
        .attribute(model, input, target)?;
    Ok([
        compare("hires-cam = grad-cam (GAP)", &hr.values, &gc.values)?,
        compare("xgrad-cam = grad-cam (GAP)", &xg.values, &gc.values)?,
    ])
}

/// A noise tunnel without noise (standard deviation 0) is its inner method:
/// SmoothGrad gives the inner map `a`, SmoothGrad-squared `a^2`, VarGrad `0`. Returns
/// the three checks.
pub fn noise_tunnel_without_noise_is_inner<F, M, A>(
    inner: &A,
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
) -> Result<[Check; 3]>
where
    F: Scalar,
    M: Model<F> + ?Sized,
    A: Clone + Attribution<F, M> + for<'x> Attribution<F, ItemRows<'x, M>>,
{
    let plain = Attribution::<F, M>::attribute(inner, model, input, target)?.values;
    let tunnel = |kind| {
        NoiseTunnel::new(inner.clone(), kind)
            .samples(3)
            .std(0.0)
            .attribute(model, input, target)
            .map(|m| m.values)
    };
    Ok([
        compare(
            "smoothgrad(std 0) = inner",
            &tunnel(NoiseKind::SmoothGrad)?,
            &plain,
        )?,
        compare(
            "smoothgrad-sq(std 0) = inner^2",
            &tunnel(NoiseKind::SmoothGradSq)?,
            &plain.mapv(|v| v * v),
        )?,
        compare(
            "vargrad(std 0) = 0",
            &tunnel(NoiseKind::VarGrad)?,
            &plain.mapv(|_| F::zero()),
        )?,
    ])
}

/// Per-channel Grad-CAM maps (`alpha_k A^k`, Captum's `attr_dim_summation=False`)
/// sum over channels to Grad-CAM before its `ReLU`.
pub fn per_channel_sums_to_grad_cam<F: Scalar, M: LayerTap<F> + ?Sized>(
    grad_cam: &GradCam,
    model: &M,
    input: ArrayView4<F>,
    target: &Target<F>,
) -> Result<Check> {
    let per = grad_cam
        .clone()
        .per_channel()
        .attribute(model, input, target)?;
    let whole = grad_cam
        .clone()
        .without_relu()
        .attribute(model, input, target)?;
    if per.values.ndim() != 4 {
        return Err(Error::shape(
            "per-channel grad-cam",
            "(N, K, h, w)",
            format!("{:?}", per.values.shape()),
        ));
    }
    compare(
        "sum_k per-channel = grad-cam before relu",
        &per.values.sum_axis(Axis(1)),
        &whole.values,
    )
}
