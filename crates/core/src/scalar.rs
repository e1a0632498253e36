use std::fmt::{Debug, Display};

use ndarray::ScalarOperand;
use num_traits::{Float, FromPrimitive};

/// The element type of inputs, scores and maps: `f32` for speed, `f64` for the
/// finite-difference checks. Anything that is a float to `num-traits` and `ndarray`.
pub trait Scalar:
    Float + FromPrimitive + ScalarOperand + Debug + Display + Default + Send + Sync + 'static
{
    /// Converts an `f64` literal or statistic into this type.
    fn of(v: f64) -> Self {
        <Self as FromPrimitive>::from_f64(v).unwrap_or_else(Self::nan)
    }

    /// Widens to `f64`, for error messages and tolerances.
    fn as_f64(self) -> f64 {
        self.to_f64().unwrap_or(f64::NAN)
    }
}

impl Scalar for f32 {}
impl Scalar for f64 {}
