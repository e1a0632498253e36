//! Random networks built from a [`NetSpec`], and the functionally equal or shifted
//! twins the invariance properties compare them with.
//!
//! A network is: `conv1` (3x3, no padding, so a constant input shift is exactly
//! absorbed by its bias), optional inference batch norm `bn1`, a rectifier `act1`
//! (ReLU or ReLU6), optional 2x2 max-pool `pool`, optional residual block `block`
//! (`block.conv1` 3x3 "same", `block.act1`, `block.conv2`, the skip added as
//! `block.add`, `block.act2`, aliased `block`), global average pool, `fc`. Its default
//! Grad-CAM layer is the last rectified map (`act1`, `pool` or `block`).

use attrib_core::{Error, Result};
use attrib_dfdx::{
    BatchNorm2d, Conv2d, Conv2dConfig, Elem, Linear, Network, NetworkBuilder, Padding, Pool2dConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The architecture of a random network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetSpec {
    /// Input channels.
    pub in_ch: usize,
    /// Input side (pixels).
    pub size: usize,
    /// Channels of every convolution.
    pub hidden: usize,
    /// Inference batch norm after `conv1`.
    pub batch_norm: bool,
    /// ReLU6 instead of ReLU.
    pub relu6: bool,
    /// A 2x2 max-pool after `act1`.
    pub max_pool: bool,
    /// A residual block after that.
    pub residual: bool,
    /// Outputs.
    pub classes: usize,
    /// The weights' seed.
    pub seed: u64,
}

/// A functionally equal rewrite of a network, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The network itself.
    Original,
    /// Batch norm folded into `conv1` (a network without batch norm gains one with
    /// unit statistics instead, so the two always differ in structure).
    FoldedBatchNorm,
    /// `conv1` split into two convolutions whose outputs are added.
    SplitConv,
    /// A 1x1 identity convolution inserted after `act1`.
    InsertedIdentity,
    /// `conv1`'s bias lowered by the response to a constant input shift of `shift`
    /// per channel: the network of `x + shift` computes what the original computes
    /// of `x` (Kindermans et al.'s input invariance).
    ShiftAbsorbed(i32),
    /// `conv2` of the block (or `conv1` without one) and `fc` re-drawn from another
    /// seed (Adebayo et al.'s cascading randomisation of the top layers).
    RandomizedTop,
}

/// The shift, in hundredths, that [`Variant::ShiftAbsorbed`] encodes.
pub const SHIFT: i32 = 50;

struct Weights {
    conv1_w: Vec<f64>,
    conv1_b: Vec<f64>,
    bn: [Vec<f64>; 4],
    block1_w: Vec<f64>,
    block1_b: Vec<f64>,
    block2_w: Vec<f64>,
    block2_b: Vec<f64>,
    fc_w: Vec<f64>,
    fc_b: Vec<f64>,
}

impl NetSpec {
    fn weights(&self, seed: u64) -> Weights {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (c, h, k) = (self.in_ch, self.hidden, self.classes);
        let mut v = |n: usize, s: f64| -> Vec<f64> {
            (0..n).map(|_| rng.gen_range(-1.0..1.0) * s).collect()
        };
        let conv1_w = v(h * c * 9, 0.6);
        let conv1_b = v(h, 0.3);
        let gamma = v(h, 0.5).into_iter().map(|g| 1.0 + g).collect();
        let beta = v(h, 0.3);
        let mean = v(h, 0.3);
        let var = v(h, 0.4).into_iter().map(|g| 1.0 + g).collect();
        Weights {
            conv1_w,
            conv1_b,
            bn: [gamma, beta, mean, var],
            block1_w: v(h * h * 9, 0.4),
            block1_b: v(h, 0.2),
            block2_w: v(h * h * 9, 0.4),
            block2_b: v(h, 0.2),
            fc_w: v(k * h, 1.0),
            fc_b: v(k, 0.3),
        }
    }

    /// Input shape `(C, H, W)`.
    pub fn input_shape(&self) -> [usize; 3] {
        [self.in_ch, self.size, self.size]
    }

    /// The network, in `E`.
    pub fn build<E: Elem>(&self) -> Result<Network<E>> {
        self.build_variant(Variant::Original)
    }

    /// The network rewritten by `variant`, in `E`.
    pub fn build_variant<E: Elem>(&self, variant: Variant) -> Result<Network<E>> {
        if self.size < 3 + usize::from(self.max_pool) * 2 {
            return Err(Error::param(
                "net spec",
                format!("input side {} is too small", self.size),
            ));
        }
        let mut wts = self.weights(self.seed);
        if variant == Variant::RandomizedTop {
            let other = self.weights(self.seed ^ 0x5eed_5eed);
            if self.residual {
                wts.block2_w = other.block2_w;
                wts.block2_b = other.block2_b;
            } else {
                wts.conv1_w = other.conv1_w;
                wts.conv1_b = other.conv1_b;
            }
            wts.fc_w = other.fc_w;
            wts.fc_b = other.fc_b;
        }
        let (c, h) = (self.in_ch, self.hidden);
        let cast = |v: &[f64]| -> Vec<E> { v.iter().map(|&x| E::of(x)).collect() };
        let valid = Conv2dConfig::default();
        let same = Conv2dConfig {
            padding: Padding::symmetric(1),
            ..Conv2dConfig::default()
        };
        let [gamma, beta, mean, var] = &wts.bn;
        let eps = 1e-5;
        // conv1's weights and bias as the variant has them.
        let (mut w1, mut b1) = (wts.conv1_w.clone(), wts.conv1_b.clone());
        let mut bn = self.batch_norm;
        if variant == Variant::FoldedBatchNorm && self.batch_norm {
            for o in 0..h {
                let s = gamma[o] / (var[o] + eps).sqrt();
                for w in &mut w1[o * c * 9..(o + 1) * c * 9] {
                    *w *= s;
                }
                b1[o] = (b1[o] - mean[o]) * s + beta[o];
            }
            bn = false;
        }
        if let Variant::ShiftAbsorbed(hundredths) = variant {
            let shift = f64::from(hundredths) / 100.0;
            for o in 0..h {
                b1[o] -= shift * w1[o * c * 9..(o + 1) * c * 9].iter().sum::<f64>();
            }
        }
        let mut b = NetworkBuilder::<E>::new(self.input_shape());
        let input = b.current();
        if variant == Variant::SplitConv {
            // W = W/3 + 2W/3: two convolutions from the input, their sum is conv1.
            let third: Vec<f64> = w1.iter().map(|w| w / 3.0).collect();
            let rest: Vec<f64> = w1.iter().zip(&third).map(|(w, t)| w - t).collect();
            b.conv2d(
                "conv1a",
                Conv2d::from_vec(cast(&third), [h, c, 3, 3], Some(cast(&b1)), valid)?,
            )?;
            let a = b.current();
            b.set_current(input);
            b.conv2d(
                "conv1b",
                Conv2d::from_vec(cast(&rest), [h, c, 3, 3], None, valid)?,
            )?;
            b.add("conv1", a)?;
        } else {
            b.conv2d(
                "conv1",
                Conv2d::from_vec(cast(&w1), [h, c, 3, 3], Some(cast(&b1)), valid)?,
            )?;
        }
        if bn {
            b.batch_norm(
                "bn1",
                BatchNorm2d::new(&cast(gamma), &cast(beta), &cast(mean), &cast(var), eps)?,
            )?;
        } else if variant == Variant::FoldedBatchNorm {
            // Without batch norm in the spec, the twin gains an identity one.
            let ones = vec![E::of(1.0); h];
            let zeros = vec![E::of(0.0); h];
            b.batch_norm(
                "bn1",
                BatchNorm2d::new(&ones, &zeros, &zeros, &vec![E::of(1.0 - eps); h], eps)?,
            )?;
        }
        if self.relu6 {
            b.relu6("act1")?;
        } else {
            b.relu("act1")?;
        }
        if variant == Variant::InsertedIdentity {
            let mut eye = vec![0.0; h * h];
            for o in 0..h {
                eye[o * h + o] = 1.0;
            }
            b.conv2d(
                "identity",
                Conv2d::from_vec(cast(&eye), [h, h, 1, 1], None, valid)?,
            )?;
        }
        if self.max_pool {
            b.max_pool("pool", Pool2dConfig::new(2, 2, 0))?;
        }
        if self.residual {
            let skip = b.current();
            let relu6 = self.relu6;
            b.scope("block", |b| {
                b.conv2d(
                    "conv1",
                    Conv2d::from_vec(
                        cast(&wts.block1_w),
                        [h, h, 3, 3],
                        Some(cast(&wts.block1_b)),
                        same,
                    )?,
                )?;
                if relu6 {
                    b.relu6("act1")?;
                } else {
                    b.relu("act1")?;
                }
                b.conv2d(
                    "conv2",
                    Conv2d::from_vec(
                        cast(&wts.block2_w),
                        [h, h, 3, 3],
                        Some(cast(&wts.block2_b)),
                        same,
                    )?,
                )?;
                b.add("add", skip)?;
                if relu6 {
                    b.relu6("act2")?;
                } else {
                    b.relu("act2")?;
                }
                Ok(())
            })?;
        }
        b.global_avg_pool("gap")?.flatten("flatten")?;
        b.linear(
            "fc",
            Linear::from_vec(cast(&wts.fc_w), [self.classes, h], Some(cast(&wts.fc_b)))?,
        )?;
        b.build()
    }
}
