use crate::Scalar;

/// How rectifiers pass relevance backwards. Chosen per backward pass and applied at
/// the rectifier *op*, so every ReLU and ReLU6 in a network follows it, including
/// reused and residual ones (TorchRay's design, rather than patching modules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Rectifier {
    /// The true gradient: `R_l = (f_l in the linear region) * R_{l+1}`.
    #[default]
    Gradient,
    /// Guided backpropagation (Springenberg et al.):
    /// `R_l = (f_l in the linear region) * (R_{l+1} > 0) * R_{l+1}`.
    Guided,
    /// Deconvnet (Zeiler & Fergus): `R_l = (R_{l+1} > 0) * R_{l+1}`, ignoring the forward input.
    Deconvnet,
}

impl Rectifier {
    /// The relevance passed to a rectifier's input, given whether the forward input
    /// was in the rectifier's linear region (`x > 0` for ReLU, `0 < x < 6` for ReLU6)
    /// and the relevance arriving from above. Every backend applies exactly this.
    #[inline]
    pub fn pass<F: Scalar>(self, active: bool, upstream: F) -> F {
        let keep = match self {
            Rectifier::Gradient => active,
            Rectifier::Guided => active && upstream > F::zero(),
            Rectifier::Deconvnet => upstream > F::zero(),
        };
        if keep {
            upstream
        } else {
            F::zero()
        }
    }

    /// The rule's name as the CLI and the docs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Rectifier::Gradient => "gradient",
            Rectifier::Guided => "guided",
            Rectifier::Deconvnet => "deconvnet",
        }
    }
}

/// Which rectifying nonlinearity an op computes in the forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RectifierKind {
    /// `max(0, x)`.
    Relu,
    /// `min(max(0, x), 6)`, as in MobileNet and EfficientNet-Lite.
    Relu6,
}

impl RectifierKind {
    /// The forward value.
    #[inline]
    pub fn apply<F: Scalar>(self, x: F) -> F {
        match self {
            RectifierKind::Relu => {
                if x > F::zero() {
                    x
                } else {
                    F::zero()
                }
            }
            RectifierKind::Relu6 => {
                let six = F::of(6.0);
                if x > six {
                    six
                } else if x > F::zero() {
                    x
                } else {
                    F::zero()
                }
            }
        }
    }

    /// Whether `x` lies where the true derivative is 1. Strict at the kinks, as in
    /// PyTorch (`threshold_backward`, `hardtanh_backward`).
    #[inline]
    pub fn active<F: Scalar>(self, x: F) -> bool {
        match self {
            RectifierKind::Relu => x > F::zero(),
            RectifierKind::Relu6 => x > F::zero() && x < F::of(6.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_example_guided_relu() {
        // DESIGN.md: input [1,-2,3,4], upstream [1,1,-1,2] -> guided [1,0,0,2].
        let x = [1.0f32, -2.0, 3.0, 4.0];
        let g = [1.0f32, 1.0, -1.0, 2.0];
        let out: Vec<f32> = x
            .iter()
            .zip(&g)
            .map(|(&x, &g)| Rectifier::Guided.pass(RectifierKind::Relu.active(x), g))
            .collect();
        assert_eq!(out, vec![1.0, 0.0, 0.0, 2.0]);
        let deconv: Vec<f32> = x
            .iter()
            .zip(&g)
            .map(|(&x, &g)| Rectifier::Deconvnet.pass(RectifierKind::Relu.active(x), g))
            .collect();
        assert_eq!(deconv, vec![1.0, 1.0, 0.0, 2.0]);
        let grad: Vec<f32> = x
            .iter()
            .zip(&g)
            .map(|(&x, &g)| Rectifier::Gradient.pass(RectifierKind::Relu.active(x), g))
            .collect();
        assert_eq!(grad, vec![1.0, 0.0, -1.0, 2.0]);
    }

    #[test]
    fn relu6_region_is_open() {
        let k = RectifierKind::Relu6;
        assert!(!k.active(0.0f64));
        assert!(k.active(3.0f64));
        assert!(!k.active(6.0f64));
        assert_eq!(k.apply(7.5f64), 6.0);
        assert_eq!(k.apply(-1.0f64), 0.0);
    }
}
