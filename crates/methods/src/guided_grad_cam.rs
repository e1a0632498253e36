use attrib_core::resample::{resize_bilinear, resize_nearest};
use attrib_core::{
    Attribution, AttributionMap, LayerTap, MapLayout, Rectifier, Result, Scalar, Target,
};
use ndarray::{ArrayView4, Axis};

use crate::parts::{input_gradient, map};
use crate::GradCam;

/// How Guided Grad-CAM brings Grad-CAM to the input's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// Bilinear, PyTorch's `align_corners=False` geometry: the paper's choice, and
    /// the default here.
    #[default]
    Bilinear,
    /// Nearest neighbour, PyTorch's `mode="nearest"`: Captum's default.
    Nearest,
}

impl std::str::FromStr for Interpolation {
    type Err = attrib_core::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bilinear" => Ok(Interpolation::Bilinear),
            "nearest" => Ok(Interpolation::Nearest),
            other => Err(attrib_core::Error::param(
                "interpolation",
                format!("unknown `{other}`; valid: bilinear, nearest"),
            )),
        }
    }
}

/// Guided Grad-CAM (Selvaraju et al.): guided backprop `(N, C, H, W)` multiplied
/// elementwise by Grad-CAM upsampled to the input size, broadcast over channels.
/// Captum's `GuidedGradCam(interpolate_mode=...)`, bilinear by default (the paper's;
/// Captum defaults to nearest).
#[derive(Debug, Clone, Default)]
pub struct GuidedGradCam {
    grad_cam: GradCam,
    interpolation: Interpolation,
}

impl GuidedGradCam {
    /// Guided Grad-CAM with Grad-CAM at the model's default layer.
    pub fn new() -> Self {
        GuidedGradCam::default()
    }

    /// Uses `grad_cam` (its layer, counterfactual setting) for the coarse map.
    pub fn with_grad_cam(grad_cam: GradCam) -> Self {
        GuidedGradCam {
            grad_cam,
            interpolation: Interpolation::default(),
        }
    }

    /// Upsamples Grad-CAM with `mode`.
    pub fn interpolate(mut self, mode: Interpolation) -> Self {
        self.interpolation = mode;
        self
    }
}

impl<F: Scalar, M: LayerTap<F> + ?Sized> Attribution<F, M> for GuidedGradCam {
    fn name(&self) -> &'static str {
        "guided-grad-cam"
    }

    fn attribute(
        &self,
        model: &M,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        let (cam, mut guided, out) = match self.grad_cam.shared_guided_pass(model, input, target)? {
            Some(shared) => shared,
            None => {
                let (cam, _, _) = self.grad_cam.compute(model, input, target)?;
                let (guided, out) = input_gradient(model, input, target, Rectifier::Guided)?;
                (cam, guided, out)
            }
        };
        let (_, _, h, w) = guided.dim();
        let up = match self.interpolation {
            Interpolation::Bilinear => resize_bilinear(cam.view(), h, w),
            Interpolation::Nearest => resize_nearest(cam.view(), h, w),
        };
        for (mut item, scale) in guided.outer_iter_mut().zip(up.outer_iter()) {
            for mut ch in item.axis_iter_mut(Axis(0)) {
                ch.zip_mut_with(&scale, |g, &s| *g = *g * s);
            }
        }
        Ok(map(guided, MapLayout::Input, &out))
    }
}
