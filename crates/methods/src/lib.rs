//! `attrib-methods` holds the attribution methods, one file each, written against
//! `attrib-core`'s [`Model`](attrib_core::Model) and [`LayerTap`](attrib_core::LayerTap)
//! traits only: they never see a backend's types. Each returns the raw map of the
//! published definition (no normalisation; that is `attrib-viz`'s job), shaped as its
//! docs say.
//!
//! | method | definition | output |
//! |---|---|---|
//! | [`Gradient`] | `dS_c/dI` | `(N, C, H, W)` |
//! | [`Saliency`] (Simonyan et al.) | `max_c abs(dS_c/dI)` | `(N, H, W)` |
//! | [`Deconvnet`] (Zeiler & Fergus) | rectifiers pass `(R > 0) R` | `(N, C, H, W)` |
//! | [`GuidedBackprop`] (Springenberg et al.) | rectifiers pass `(f > 0)(R > 0) R` | `(N, C, H, W)` |
//! | [`Cam`] (Zhou et al.) | `sum_k w_k^c A^k` on a GAP + linear head | `(N, h, w)` |
//! | [`GradCam`] (Selvaraju et al.) | `ReLU(sum_k mean_ij(dS_c/dA^k) A^k)` | `(N, h, w)` |
//! | [`GuidedGradCam`] | guided backprop ⊙ bilinear-upsampled Grad-CAM | `(N, C, H, W)` |
//! | [`Occlusion`] (Zeiler & Fergus) | mean score drop over the windows covering a pixel | `(N, H, W)` |
//!
//! A new method is one file: implement [`Attribution`] for
//! a struct, ask the model for one [`BackwardRequest`](attrib_core::BackwardRequest)
//! (input gradient and/or taps under a rectifier rule), combine. The
//! [`invariants`] module holds the identities between methods that tests, and
//! researchers checking their own methods, reuse.

/// `new()` (at the model's default layer) and `layer(name)` for a method struct
/// that implements `Default` and picks its layer with a `layer: Option<String>`
/// field: the builder every method at a layer has (`layer_builder!(MyCam);`).
#[macro_export]
macro_rules! layer_builder {
    ($t:ty) => {
        impl $t {
            /// At the model's default layer.
            pub fn new() -> Self {
                Self::default()
            }

            /// At `layer`.
            pub fn layer(mut self, layer: impl Into<String>) -> Self {
                self.layer = Some(layer.into());
                self
            }
        }
    };
}

mod ablation_cam;
mod cam;
mod deconvnet;
mod eigen_cam;
mod grad_cam;
mod grad_cam_plus_plus;
mod gradient;
mod guided_backprop;
mod guided_grad_cam;
mod hires_cam;
mod input_x_gradient;
mod integrated_gradients;
pub mod invariants;
mod layer_cam;
mod multi_layer;
mod noise_tunnel;
mod occlusion;
pub mod parts;
pub mod registry;
pub mod rows;
mod saliency;
mod score_cam;
mod xgrad_cam;

pub use ablation_cam::AblationCam;
pub use cam::Cam;
pub use deconvnet::Deconvnet;
pub use eigen_cam::EigenCam;
pub use grad_cam::GradCam;
pub use grad_cam_plus_plus::GradCamPlusPlus;
pub use gradient::Gradient;
pub use guided_backprop::GuidedBackprop;
pub use guided_grad_cam::{GuidedGradCam, Interpolation};
pub use hires_cam::HiResCam;
pub use input_x_gradient::InputXGradient;
pub use integrated_gradients::{gauss_legendre, IntegratedGradients, Integration};
pub use layer_cam::LayerCam;
pub use multi_layer::{combine as combine_layers, AtLayer, MultiLayer};
pub use noise_tunnel::{NoiseKind, NoiseTunnel};
pub use occlusion::Occlusion;
pub use saliency::Saliency;
pub use score_cam::ScoreCam;
pub use xgrad_cam::XGradCam;

pub use attrib_core::{Attribution, AttributionMap, MapLayout, Target};
