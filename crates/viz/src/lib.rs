//! `attrib-viz` turns raw attribution maps into pictures and files: normalisation
//! (safe on constant maps), colormaps, upsampling to the input size with the same
//! geometry the methods use, overlays on the photo, PNG and `.npy` output, SVG line
//! charts for evaluation curves. It never differentiates anything; it only renders
//! what the methods return.

pub mod colormap;
pub mod io;
mod luts;
pub mod normalize;
pub mod plot;
pub mod render;

pub use colormap::Colormap;
pub use normalize::{normalize, upsample_normalized, Normalization};
pub use render::{guided_image, overlay, Panel};
