use attrib_core::{
    Attribution, AttributionMap, Error, LayerTap, MapLayout, Result, Scalar, Target,
};
use ndarray::ArrayView4;

use crate::parts::weighted_channel_sum;

/// Class activation mapping (Zhou et al. 2016): `M_c = sum_k w_k^c A^k`, where `A` is
/// the feature map feeding a global-average-pool + linear head and `w^c` the
/// classifier row. Raw and signed (no ReLU), `(N, h, w)` at that layer.
///
/// For a seed target the weights are `seed · W`, the same linear combination of
/// classifier rows; the mean of the map over its positions is then the explained
/// score minus the bias term. Models without such a head get
/// [`Error::Unsupported`] (Grad-CAM generalises CAM to them).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cam;

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for Cam {
    fn name(&self) -> &'static str {
        "cam"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let head = model.linear_head().ok_or_else(|| {
            Error::unsupported(
                "cam",
                "the model does not end in a global-average-pool + linear head on a feature map; use grad-cam, which generalises CAM",
            )
        })?;
        let (scores, acts) = crate::parts::layer_activation(model, input, &head.layer)?;
        let resolved = target.resolve(scores.view())?;
        if acts.dim().1 != head.weight.ncols() {
            return Err(Error::shape(
                format!("cam: channels of `{}`", head.layer),
                head.weight.ncols(),
                acts.dim().1,
            ));
        }
        let weights = resolved.seed.dot(&head.weight);
        Ok(AttributionMap {
            values: weighted_channel_sum(&acts, &weights).into_dyn(),
            layout: MapLayout::Layer { name: head.layer },
            classes: resolved.classes,
            scores,
        })
    }
}
