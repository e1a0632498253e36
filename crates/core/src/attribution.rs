use ndarray::{Array2, ArrayD, ArrayView3, ArrayView4, Ix3, Ix4};

use crate::{Error, Result, Scalar, Target};

/// How an [`AttributionMap`]'s values are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapLayout {
    /// `(N, C, H, W)`, in input space (gradient, guided backprop, deconvnet, Guided Grad-CAM).
    Input,
    /// `(N, H, W)`, one value per input pixel (saliency, occlusion).
    Pixel,
    /// `(N, h, w)` at a layer's resolution (CAM, Grad-CAM).
    Layer {
        /// The layer the map lives on.
        name: String,
    },
    /// `(N, C, h, w)`: a layer's map per channel, before the channel sum (per-channel
    /// Grad-CAM).
    LayerChannels {
        /// The layer the maps live on.
        name: String,
    },
}

/// A method's raw result: unnormalised values (normalising is `attrib-viz`'s job),
/// with what was explained.
#[derive(Debug, Clone)]
pub struct AttributionMap<F: Scalar> {
    /// The values, shaped as [`AttributionMap::layout`] says.
    pub values: ArrayD<F>,
    /// The layout of `values`.
    pub layout: MapLayout,
    /// The explained class per item, where the target was a class.
    pub classes: Vec<Option<usize>>,
    /// The model's scores `(N, K)` at the input.
    pub scores: Array2<F>,
}

impl<F: Scalar> AttributionMap<F> {
    /// The values as `(N, C, H, W)`; an error for per-pixel or layer maps.
    pub fn input_space(&self) -> Result<ArrayView4<'_, F>> {
        self.values
            .view()
            .into_dimensionality::<Ix4>()
            .map_err(|_| {
                Error::shape(
                    "attribution map",
                    "(N, C, H, W)",
                    format!("{:?}", self.values.shape()),
                )
            })
    }

    /// The values as `(N, H, W)`; an error for input-space maps.
    pub fn spatial(&self) -> Result<ArrayView3<'_, F>> {
        self.values
            .view()
            .into_dimensionality::<Ix3>()
            .map_err(|_| {
                Error::shape(
                    "attribution map",
                    "(N, H, W)",
                    format!("{:?}", self.values.shape()),
                )
            })
    }
}

/// An attribution method: one verb, `attribute`, for every method (Captum's shape).
/// `M` is the model interface the method needs, usually `dyn LayerTap<F>` or any
/// `M: LayerTap<F>`.
pub trait Attribution<F: Scalar, M: ?Sized> {
    /// The method's name as the CLI spells it.
    fn name(&self) -> &'static str;

    /// Explains `target` for every item of `input` (NCHW).
    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>>;
}
