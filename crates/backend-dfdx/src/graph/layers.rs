//! Parameterised layers, validated on construction so that a network that builds
//! cannot fail on shapes at run time except through its input.

use std::sync::Arc;

use attrib_core::{Error, RectifierKind, Result};
use ndarray::{Array1, Array2, Array4};

use crate::ops::{Conv2dConfig, Pool2dConfig};
use crate::winograd::Winograd;
use crate::Elem;

/// A 2-d convolution's parameters: weight `(c_out, c_in/groups, kh, kw)`, optional bias.
#[derive(Debug, Clone)]
pub struct Conv2d<E> {
    pub(crate) weight: Arc<Vec<E>>,
    pub(crate) shape: [usize; 4],
    pub(crate) bias: Option<Arc<Vec<E>>>,
    pub(crate) cfg: Conv2dConfig,
    /// Winograd transforms of `weight`, made on first use by a 3x3 stride-1 pass.
    pub(crate) winograd: Arc<Winograd<E>>,
}

impl<E: Elem> Conv2d<E> {
    /// A convolution from an ndarray weight and optional bias.
    pub fn new(weight: Array4<E>, bias: Option<Array1<E>>, cfg: Conv2dConfig) -> Result<Self> {
        let (o, i, kh, kw) = weight.dim();
        Self::from_vec(
            weight.as_standard_layout().iter().copied().collect(),
            [o, i, kh, kw],
            bias.map(|b| b.to_vec()),
            cfg,
        )
    }

    /// A convolution from flat row-major data (PyTorch's layout).
    pub fn from_vec(
        weight: Vec<E>,
        shape: [usize; 4],
        bias: Option<Vec<E>>,
        cfg: Conv2dConfig,
    ) -> Result<Self> {
        if weight.len() != shape.iter().product::<usize>() || shape.contains(&0) {
            return Err(Error::shape(
                "conv2d weight",
                format!("{shape:?} with no zero dimension"),
                format!("{} values", weight.len()),
            ));
        }
        if let Some(b) = &bias {
            if b.len() != shape[0] {
                return Err(Error::shape(
                    "conv2d bias",
                    format!("({},)", shape[0]),
                    format!("({},)", b.len()),
                ));
            }
        }
        if cfg.groups == 0 || !shape[0].is_multiple_of(cfg.groups) {
            return Err(Error::param(
                "conv2d groups",
                format!(
                    "{} must divide the {} output channels",
                    cfg.groups, shape[0]
                ),
            ));
        }
        Ok(Conv2d {
            weight: Arc::new(weight),
            shape,
            bias: bias.map(Arc::new),
            cfg,
            winograd: Arc::default(),
        })
    }

    /// Weight shape `(c_out, c_in/groups, kh, kw)`.
    pub fn weight_shape(&self) -> [usize; 4] {
        self.shape
    }

    /// The configuration (stride, dilation, padding, groups).
    pub fn config(&self) -> &Conv2dConfig {
        &self.cfg
    }

    /// This convolution followed by inference batch norm `bn`, as one convolution:
    /// `w'[o] = w[o] * scale[o]`, `b'[o] = b[o] * scale[o] + shift[o]` (in f64, rounded
    /// once). Same function and same input gradient, one pass instead of two.
    pub fn fold_batch_norm(&self, bn: &BatchNorm2d<E>) -> Conv2d<E> {
        let per_out = self.shape[1] * self.shape[2] * self.shape[3];
        let weight = self
            .weight
            .chunks(per_out)
            .zip(bn.scale.iter())
            .flat_map(|(row, &a)| row.iter().map(move |&w| E::of(w.as_f64() * a.as_f64())))
            .collect();
        let bias = (0..self.shape[0])
            .map(|o| {
                let b = self.bias.as_ref().map_or(0.0, |b| b[o].as_f64());
                E::of(b * bn.scale[o].as_f64() + bn.shift[o].as_f64())
            })
            .collect();
        Conv2d {
            weight: Arc::new(weight),
            shape: self.shape,
            bias: Some(Arc::new(bias)),
            cfg: self.cfg,
            winograd: Arc::default(),
        }
    }

    /// Input channels this convolution expects.
    pub fn in_channels(&self) -> usize {
        self.shape[1] * self.cfg.groups
    }
}

/// Inference batch norm: running statistics folded into a per-channel affine map.
#[derive(Debug, Clone)]
pub struct BatchNorm2d<E> {
    pub(crate) scale: Arc<Vec<E>>,
    pub(crate) shift: Arc<Vec<E>>,
}

impl<E: Elem> BatchNorm2d<E> {
    /// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, per channel.
    pub fn new(gamma: &[E], beta: &[E], mean: &[E], var: &[E], eps: f64) -> Result<Self> {
        let c = gamma.len();
        for (what, len) in [
            ("beta", beta.len()),
            ("running_mean", mean.len()),
            ("running_var", var.len()),
        ] {
            if len != c {
                return Err(Error::shape(
                    format!("batch norm {what}"),
                    format!("({c},)"),
                    format!("({len},)"),
                ));
            }
        }
        let mut scale = Vec::with_capacity(c);
        let mut shift = Vec::with_capacity(c);
        for i in 0..c {
            let denom = (var[i].as_f64() + eps).sqrt();
            if denom.is_nan() || denom <= 0.0 || !denom.is_finite() {
                return Err(Error::param(
                    "batch norm",
                    format!(
                        "running_var[{i}] + eps = {} is not positive",
                        var[i].as_f64() + eps
                    ),
                ));
            }
            // Folded in f64 so that f32 networks match PyTorch's own folding closely.
            let s = gamma[i].as_f64() / denom;
            scale.push(E::of(s));
            shift.push(E::of(beta[i].as_f64() - mean[i].as_f64() * s));
        }
        Ok(BatchNorm2d {
            scale: Arc::new(scale),
            shift: Arc::new(shift),
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.scale.len()
    }
}

/// A fully connected layer: weight `(K, F)`, optional bias `(K,)`.
#[derive(Debug, Clone)]
pub struct Linear<E> {
    pub(crate) weight: Arc<Vec<E>>,
    pub(crate) shape: [usize; 2],
    pub(crate) bias: Option<Arc<Vec<E>>>,
}

impl<E: Elem> Linear<E> {
    /// A linear layer from an ndarray weight `(K, F)` and optional bias.
    pub fn new(weight: Array2<E>, bias: Option<Array1<E>>) -> Result<Self> {
        let (k, f) = weight.dim();
        Self::from_vec(
            weight.as_standard_layout().iter().copied().collect(),
            [k, f],
            bias.map(|b| b.to_vec()),
        )
    }

    /// A linear layer from flat row-major data.
    pub fn from_vec(weight: Vec<E>, shape: [usize; 2], bias: Option<Vec<E>>) -> Result<Self> {
        if weight.len() != shape[0] * shape[1] || shape.contains(&0) {
            return Err(Error::shape(
                "linear weight",
                format!("{shape:?} with no zero dimension"),
                format!("{} values", weight.len()),
            ));
        }
        if let Some(b) = &bias {
            if b.len() != shape[0] {
                return Err(Error::shape(
                    "linear bias",
                    format!("({},)", shape[0]),
                    format!("({},)", b.len()),
                ));
            }
        }
        Ok(Linear {
            weight: Arc::new(weight),
            shape,
            bias: bias.map(Arc::new),
        })
    }

    /// `(K, F)`.
    pub fn weight_shape(&self) -> [usize; 2] {
        self.shape
    }

    /// The weight as an ndarray `(K, F)`.
    pub fn weight(&self) -> Array2<E> {
        Array2::from_shape_vec((self.shape[0], self.shape[1]), self.weight.to_vec())
            .expect("validated on construction")
    }

    /// The bias, zeros if the layer has none.
    pub fn bias(&self) -> Array1<E> {
        match &self.bias {
            Some(b) => Array1::from_vec(b.to_vec()),
            None => Array1::zeros(self.shape[0]),
        }
    }
}

/// One node's computation.
#[derive(Debug, Clone)]
pub enum Layer<E> {
    /// 2-d convolution.
    Conv2d(Conv2d<E>),
    /// Inference batch norm.
    BatchNorm2d(BatchNorm2d<E>),
    /// ReLU or ReLU6; its backward follows the pass's rule.
    Rectifier(RectifierKind),
    /// Max pool.
    MaxPool2d(Pool2dConfig),
    /// Average pool.
    AvgPool2d {
        /// Window.
        cfg: Pool2dConfig,
        /// Count padding in the divisor (PyTorch's default).
        count_include_pad: bool,
    },
    /// Adaptive average pool to a fixed size; `[1, 1]` is global average pooling.
    AdaptiveAvgPool2d([usize; 2]),
    /// `(N, C, H, W) -> (N, C*H*W, 1, 1)`.
    Flatten,
    /// Fully connected.
    Linear(Linear<E>),
    /// Sum of two values (residual connection).
    Add,
}

impl<E: Elem> Layer<E> {
    /// The kind, as listed by [`attrib_core::LayerInfo::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv2d(_) => "conv2d",
            Layer::BatchNorm2d(_) => "batch_norm",
            Layer::Rectifier(RectifierKind::Relu) => "relu",
            Layer::Rectifier(RectifierKind::Relu6) => "relu6",
            Layer::MaxPool2d(_) => "max_pool",
            Layer::AvgPool2d { .. } => "avg_pool",
            Layer::AdaptiveAvgPool2d([1, 1]) => "global_avg_pool",
            Layer::AdaptiveAvgPool2d(_) => "adaptive_avg_pool",
            Layer::Flatten => "flatten",
            Layer::Linear(_) => "linear",
            Layer::Add => "add",
        }
    }

    /// How many inputs the layer takes.
    pub fn arity(&self) -> usize {
        match self {
            Layer::Add => 2,
            _ => 1,
        }
    }

    /// The output shape `(C, H, W)` for inputs of the given shapes.
    pub fn out_shape(&self, inputs: &[[usize; 3]]) -> Result<[usize; 3]> {
        let [c, h, w] = inputs[0];
        match self {
            Layer::Conv2d(conv) => {
                let g = conv.cfg.geometry([1, c, h, w], conv.shape)?;
                Ok([g.c_out, g.ho, g.wo])
            }
            Layer::BatchNorm2d(bn) => {
                if bn.channels() != c {
                    return Err(Error::shape("batch norm channels", bn.channels(), c));
                }
                Ok([c, h, w])
            }
            Layer::Rectifier(_) => Ok([c, h, w]),
            Layer::MaxPool2d(cfg) | Layer::AvgPool2d { cfg, .. } => {
                let g = cfg.geometry([1, c, h, w])?;
                Ok([c, g.ho, g.wo])
            }
            Layer::AdaptiveAvgPool2d([ho, wo]) => {
                if *ho == 0 || *wo == 0 {
                    return Err(Error::param(
                        "adaptive average pool",
                        "output size must be positive",
                    ));
                }
                Ok([c, *ho, *wo])
            }
            Layer::Flatten => Ok([c * h * w, 1, 1]),
            Layer::Linear(l) => {
                if [h, w] != [1, 1] || c != l.shape[1] {
                    return Err(Error::shape(
                        "linear input",
                        format!(
                            "({}, 1, 1) (flatten or pool before a linear layer)",
                            l.shape[1]
                        ),
                        format!("({c}, {h}, {w})"),
                    ));
                }
                Ok([l.shape[0], 1, 1])
            }
            Layer::Add => {
                if inputs[0] != inputs[1] {
                    return Err(Error::shape(
                        "residual add",
                        format!("{:?}", inputs[0]),
                        format!("{:?}", inputs[1]),
                    ));
                }
                Ok([c, h, w])
            }
        }
    }
}
