use attrib_core::{
    Attribution, AttributionMap, Error, LayerTap, MapLayout, Result, Scalar, Target,
};
use ndarray::{Array2, Array4, ArrayView4, Axis};

use crate::parts::{layer_or_default, relu_in_place, weighted_channel_sum};

/// Ablation-CAM (Desai & Ramaswamy 2020): each channel of the layer is ablated in
/// turn and the drop in the target's score weights it,
/// `w_k = (S - S_{-k}) / S`, the map `ReLU(sum_k w_k A^k)`, `(N, h, w)`. No gradient.
/// pytorch-grad-cam's `AblationCAM` (raw map), including its ablation value: 0 when
/// the item's smallest activation at the layer is 0 (after a ReLU), else that
/// minimum minus `1e7`.
///
/// The model runs once up to the layer ([`LayerTap::forward_from`]); the ablated
/// copies run from the layer on, `max_batch` (default 32) at a time. An explained
/// score of exactly 0 makes the weights undefined: an error.
#[derive(Debug, Clone)]
pub struct AblationCam {
    layer: Option<String>,
    max_batch: usize,
}

impl Default for AblationCam {
    fn default() -> Self {
        AblationCam {
            layer: None,
            max_batch: 32,
        }
    }
}

crate::layer_builder!(AblationCam);

impl AblationCam {
    /// At most `n` ablated copies per forward pass.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }
}

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for AblationCam {
    fn name(&self) -> &'static str {
        "ablation-cam"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        if self.max_batch == 0 {
            return Err(Error::param("ablation-cam max batch", "must be positive"));
        }
        let layer = layer_or_default(model, self.layer.as_deref())?;
        let (scores, a) = crate::parts::layer_activation(model, input, &layer)?;
        let target = target.pinned(scores.view())?;
        let resolved = target.resolve(scores.view())?;
        let (n, c, h, w) = a.dim();
        if let Some(b) = resolved.values.iter().position(|v| *v == F::zero()) {
            return Err(Error::unsupported(
                "ablation-cam",
                format!("the explained score of item {b} is 0, and the weights divide by it"),
            ));
        }
        let ablated: Vec<F> = a
            .outer_iter()
            .map(|item| {
                let lo = item.iter().copied().fold(F::infinity(), F::min);
                if lo == F::zero() {
                    F::zero()
                } else {
                    lo - F::of(1e7)
                }
            })
            .collect();
        let jobs: Vec<(usize, usize)> = (0..n).flat_map(|b| (0..c).map(move |k| (b, k))).collect();
        let mut wts = Array2::<F>::zeros((n, c));
        crate::parts::check_batch_size(
            self.max_batch.min(jobs.len()),
            c * h * w,
            "ablation-cam batch",
        )?;
        for chunk in jobs.chunks(self.max_batch) {
            let mut batch = Array4::<F>::zeros((chunk.len(), c, h, w));
            for (j, &(b, k)) in chunk.iter().enumerate() {
                let mut dst = batch.index_axis_mut(Axis(0), j);
                dst.assign(&a.index_axis(Axis(0), b));
                dst.index_axis_mut(Axis(0), k).fill(ablated[b]);
            }
            let items: Vec<usize> = chunk.iter().map(|&(b, _)| b).collect();
            let out = model.forward_from(input, &layer, batch.view(), &items)?;
            for (j, &(b, k)) in chunk.iter().enumerate() {
                let s = resolved.value_at(b, out.row(j));
                let v = resolved.values[b];
                wts[[b, k]] = (v - s) / v;
            }
        }
        let mut cam = weighted_channel_sum(&a, &wts);
        relu_in_place(&mut cam);
        Ok(AttributionMap {
            values: cam.into_dyn(),
            layout: MapLayout::Layer { name: layer },
            classes: resolved.classes,
            scores,
        })
    }
}
