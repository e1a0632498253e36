//! `attrib-core` holds the vocabulary every other attrib crate speaks: the [`Model`],
//! [`LayerTap`] and [`Attribution`] traits, the [`Target`] of an explanation (a class, a
//! class per item, the top prediction, or any differentiable objective on the outputs),
//! the [`Rectifier`] backward rules that turn plain gradients into guided backprop or
//! deconvnet, the [`AttributionMap`] every method returns, and the typed [`Error`].
//!
//! It depends on `ndarray` and `num-traits` only, never on a backend: a method written
//! against these traits runs on any network that implements them, and a backend never
//! learns which method asked for a backward pass.

mod attribution;
mod error;
mod model;
mod rectifier;
pub mod resample;
mod scalar;
mod target;

pub use attribution::{Attribution, AttributionMap, MapLayout};
pub use error::{Error, Result};
pub use model::{
    check_input, BackwardOutput, BackwardRequest, LayerInfo, LayerTap, LinearHead, Model, TapOutput,
};
pub use rectifier::{Rectifier, RectifierKind};
pub use scalar::Scalar;
pub use target::{Objective, ResolvedTarget, Target};
