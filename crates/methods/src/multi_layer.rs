use attrib_core::resample::resize_bilinear;
use attrib_core::{
    Attribution, AttributionMap, Error, LayerTap, MapLayout, Result, Scalar, Target,
};
use ndarray::{Array3, ArrayView4};

use crate::{
    AblationCam, EigenCam, GradCam, GradCamPlusPlus, HiResCam, LayerCam, ScoreCam, XGradCam,
};

/// A method computed at one layer, which can be asked for at another.
pub trait AtLayer: Sized {
    /// The same method at `layer`.
    fn at_layer(&self, layer: &str) -> Self;
}

macro_rules! at_layer {
    ($($t:ty),*) => {$(
        impl AtLayer for $t {
            fn at_layer(&self, layer: &str) -> Self {
                self.clone().layer(layer)
            }
        }
    )*};
}

at_layer!(
    GradCam,
    GradCamPlusPlus,
    XGradCam,
    LayerCam,
    HiResCam,
    ScoreCam,
    AblationCam,
    EigenCam
);

/// A CAM method at several layers at once, as pytorch-grad-cam combines its list of
/// target layers: each layer's map min-max normalised (`1e-7` added to the range)
/// and resized bilinearly to the input, the mean over layers, `ReLU`, normalised
/// again. `(N, H, W)` in `[0, 1]`.
#[derive(Debug, Clone)]
pub struct MultiLayer<A> {
    method: A,
    layers: Vec<String>,
}

impl<A: AtLayer> MultiLayer<A> {
    /// `method` at each of `layers`.
    pub fn new(method: A, layers: Vec<String>) -> Self {
        MultiLayer { method, layers }
    }
}

/// pytorch-grad-cam's `scale_cam_image` for one map: `(m - min) / (max(m - min) +
/// 1e-7)`.
fn scale<F: Scalar>(mut m: ndarray::ArrayViewMut2<F>) {
    let lo = m.iter().copied().fold(F::infinity(), F::min);
    m.mapv_inplace(|v| v - lo);
    let hi = m.iter().copied().fold(F::neg_infinity(), F::max);
    let d = hi + F::of(1e-7);
    m.mapv_inplace(|v| v / d);
}

impl<F, M, A> Attribution<F, M> for MultiLayer<A>
where
    F: Scalar,
    M: LayerTap<F> + ?Sized,
    A: AtLayer + Attribution<F, M>,
{
    fn name(&self) -> &'static str {
        "multi-layer"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        if self.layers.is_empty() {
            return Err(Error::param("layers", "give at least one"));
        }
        let maps = self
            .layers
            .iter()
            .map(|l| self.method.at_layer(l).attribute(model, input, target))
            .collect::<Result<Vec<_>>>()?;
        let (_, _, h, w) = input.dim();
        combine(maps, h, w)
    }
}

/// pytorch-grad-cam's combination of one method's maps at several layers (see
/// [`MultiLayer`]): `(N, H, W)` at the input's size `h x w`, in `[0, 1]`, with the
/// classes and scores of the last map.
pub fn combine<F: Scalar>(
    maps: Vec<AttributionMap<F>>,
    h: usize,
    w: usize,
) -> Result<AttributionMap<F>> {
    let n_maps = maps.len();
    let mut sum: Option<Array3<F>> = None;
    let mut last = None;
    for m in maps {
        let mut layer: Array3<F> = m.values.clone().into_dimensionality().map_err(|_| {
            Error::shape(
                "a layer map to combine",
                "(N, h, w)",
                format!("{:?}", m.values.shape()),
            )
        })?;
        for item in layer.outer_iter_mut() {
            scale(item);
        }
        let up = resize_bilinear(layer.view(), h, w);
        sum = Some(match sum {
            None => up,
            Some(s) if s.dim() == up.dim() => s + up,
            Some(s) => {
                return Err(Error::shape(
                    "layer maps to combine",
                    format!("{:?}", s.dim()),
                    format!("{:?}", up.dim()),
                ))
            }
        });
        last = Some(m);
    }
    let (Some(mut sum), Some(last)) = (sum, last) else {
        return Err(Error::param("layers", "give at least one"));
    };
    let inv = F::one() / F::of(n_maps as f64);
    sum.mapv_inplace(|v| (v * inv).max(F::zero()));
    for item in sum.outer_iter_mut() {
        scale(item);
    }
    Ok(AttributionMap {
        values: sum.into_dyn(),
        layout: MapLayout::Pixel,
        classes: last.classes,
        scores: last.scores,
    })
}
