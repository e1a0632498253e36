use attrib_core::resample::resize_bilinear_aligned;
use attrib_core::{
    Attribution, AttributionMap, Error, LayerTap, MapLayout, Result, Scalar, Target,
};
use ndarray::{s, Array2, Array4, ArrayView4, Axis};

use crate::parts::{layer_or_default, relu_in_place, weighted_channel_sum};

/// Score-CAM (Wang et al. 2020): each channel of the layer, upsampled to the input
/// (bilinear, corners aligned) and min-max normalised (`1e-8` added to the range),
/// masks the input; the target's score on each masked input, softmaxed over the
/// channels, weights the channels: `ReLU(sum_k w_k A^k)`, `(N, h, w)`. No gradient.
/// pytorch-grad-cam's `ScoreCAM` (raw map). The masked inputs run in forward
/// batches of `max_batch` (default 32); a top-predicted target is pinned to the
/// classes at the unmasked input.
#[derive(Debug, Clone)]
pub struct ScoreCam {
    layer: Option<String>,
    max_batch: usize,
}

impl Default for ScoreCam {
    fn default() -> Self {
        ScoreCam {
            layer: None,
            max_batch: 32,
        }
    }
}

crate::layer_builder!(ScoreCam);

impl ScoreCam {
    /// At most `n` masked inputs per forward pass.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }
}

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for ScoreCam {
    fn name(&self) -> &'static str {
        "score-cam"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        if self.max_batch == 0 {
            return Err(Error::param("score-cam max batch", "must be positive"));
        }
        let layer = layer_or_default(model, self.layer.as_deref())?;
        let (scores, a) = crate::parts::layer_activation(model, input, &layer)?;
        let target = target.pinned(scores.view())?;
        let resolved = target.resolve(scores.view())?;
        let (n, c, _, _) = a.dim();
        let (_, ch, hh, ww) = input.dim();
        // One mask per (item, channel): the channel upsampled, min-max normalised.
        // Made per chunk, so memory stays at `max_batch` masked inputs (all masks of
        // ResNet-18's layer4 at 224 would take 100 MB per item).
        let mask = |b: usize, k: usize| -> Array2<F> {
            let mut up = resize_bilinear_aligned(a.slice(s![b, k..k + 1, .., ..]), hh, ww)
                .index_axis_move(Axis(0), 0);
            let (lo, hi) = up
                .iter()
                .fold((F::infinity(), F::neg_infinity()), |(l, u), &v| {
                    (l.min(v), u.max(v))
                });
            let range = hi - lo + F::of(1e-8);
            up.mapv_inplace(|v| (v - lo) / range);
            up
        };
        let jobs: Vec<(usize, usize)> = (0..n).flat_map(|b| (0..c).map(move |k| (b, k))).collect();
        let mut raw = Array2::<F>::zeros((n, c));
        crate::parts::check_batch_size(
            self.max_batch.min(jobs.len()),
            ch * hh * ww,
            "score-cam batch",
        )?;
        for chunk in jobs.chunks(self.max_batch) {
            let mut batch = Array4::<F>::zeros((chunk.len(), ch, hh, ww));
            for (j, &(b, k)) in chunk.iter().enumerate() {
                let mask = mask(b, k);
                for (mut dst, src) in batch
                    .index_axis_mut(Axis(0), j)
                    .outer_iter_mut()
                    .zip(input.index_axis(Axis(0), b).outer_iter())
                {
                    ndarray::Zip::from(&mut dst)
                        .and(&src)
                        .and(&mask)
                        .for_each(|d, &x, &m| *d = x * m);
                }
            }
            let items: Vec<usize> = chunk.iter().map(|&(b, _)| b).collect();
            let out = model.forward_items(batch.view(), &items)?;
            for (j, &(b, k)) in chunk.iter().enumerate() {
                raw[[b, k]] = resolved.value_at(b, out.row(j));
            }
        }
        // Softmax over channels.
        let mut w = raw;
        for mut row in w.rows_mut() {
            let m = row.iter().copied().fold(F::neg_infinity(), F::max);
            row.mapv_inplace(|v| (v - m).exp());
            let sum = row.sum();
            row.mapv_inplace(|v| v / sum);
        }
        let mut cam = weighted_channel_sum(&a, &w);
        relu_in_place(&mut cam);
        Ok(AttributionMap {
            values: cam.into_dyn(),
            layout: MapLayout::Layer { name: layer },
            classes: resolved.classes,
            scores,
        })
    }
}
