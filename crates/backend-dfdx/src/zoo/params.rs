//! Reading a layer's tensors under its full module path while building: what every
//! family's builder shares.

use std::sync::Arc;

use attrib_core::Result;

use crate::kernels;
use crate::weights::{ParamKind, ParamSource};
use crate::{BatchNorm2d, Conv2d, Conv2dConfig, Elem, Linear, NetworkBuilder, Padding};

/// A builder plus the parameter source, with helpers that read each layer's tensors
/// under its full module path.
pub(super) struct Params<'a, E: Elem> {
    pub(super) src: &'a mut dyn ParamSource<E>,
    pub(super) b: &'a mut NetworkBuilder<E>,
}

impl<E: Elem> Params<'_, E> {
    pub(super) fn take(
        &mut self,
        name: &str,
        leaf: &str,
        shape: &[usize],
        kind: ParamKind,
    ) -> Result<Vec<E>> {
        self.src
            .take(&format!("{}.{leaf}", self.b.path(name)), shape, kind)
    }

    pub(super) fn conv(
        &mut self,
        name: &str,
        shape: [usize; 4],
        bias: bool,
        cfg: Conv2dConfig,
    ) -> Result<()> {
        let w = self.take(name, "weight", &shape, ParamKind::Weight)?;
        let b = if bias {
            Some(self.take(name, "bias", &[shape[0]], ParamKind::Bias)?)
        } else {
            None
        };
        self.b.conv2d(name, Conv2d::from_vec(w, shape, b, cfg)?)?;
        Ok(())
    }

    pub(super) fn bn(&mut self, name: &str, c: usize, eps: f64) -> Result<()> {
        let g = self.take(name, "weight", &[c], ParamKind::BnWeight)?;
        let be = self.take(name, "bias", &[c], ParamKind::BnBias)?;
        let m = self.take(name, "running_mean", &[c], ParamKind::BnMean)?;
        let v = self.take(name, "running_var", &[c], ParamKind::BnVar)?;
        self.b
            .batch_norm(name, BatchNorm2d::new(&g, &be, &m, &v, eps)?)?;
        Ok(())
    }

    pub(super) fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<()> {
        let w = self.take(name, "weight", &[out, inp], ParamKind::Weight)?;
        let b = self.take(name, "bias", &[out], ParamKind::Bias)?;
        self.b
            .linear(name, Linear::from_vec(w, [out, inp], Some(b))?)?;
        Ok(())
    }

    /// Runs `f` inside the builder scope `name`.
    pub(super) fn scope(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Params<'_, E>) -> Result<()>,
    ) -> Result<()> {
        let src = &mut *self.src;
        self.b.scope(name, |b| f(&mut Params { src, b }))?;
        Ok(())
    }
}

pub(super) fn conv_cfg(stride: usize, pad: usize) -> Conv2dConfig {
    Conv2dConfig {
        stride: [stride, stride],
        padding: Padding::symmetric(pad),
        ..Conv2dConfig::default()
    }
}

pub(super) const TORCH_BN_EPS: f64 = 1e-5;

/// A linear layer's weights `(out, in)` and bias, for the heads that run as code over
/// the tape ops rather than as network layers.
#[derive(Debug, Clone)]
pub(super) struct Dense<E> {
    pub(super) w: Arc<Vec<E>>,
    pub(super) b: Arc<Vec<E>>,
    pub(super) shape: [usize; 2],
}

impl<E: Elem> Dense<E> {
    pub(super) fn take(
        src: &mut dyn ParamSource<E>,
        name: &str,
        out: usize,
        inp: usize,
    ) -> Result<Self> {
        Ok(Dense {
            w: Arc::new(src.take(&format!("{name}.weight"), &[out, inp], ParamKind::Weight)?),
            b: Arc::new(src.take(&format!("{name}.bias"), &[out], ParamKind::Bias)?),
            shape: [out, inp],
        })
    }

    /// `x W^T + b` for `rows` rows, on the host.
    pub(super) fn host(&self, rows: usize, x: &[E]) -> Vec<E> {
        let [k, f] = self.shape;
        let mut y = vec![E::zero(); rows * k];
        kernels::linear_forward(rows, f, k, x, &self.w, Some(&self.b), &mut y);
        y
    }
}
