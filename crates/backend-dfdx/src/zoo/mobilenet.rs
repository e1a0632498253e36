//! torchvision's `mobilenet_v2` (Sandler et al., "MobileNetV2: Inverted Residuals and
//! Linear Bottlenecks", CVPR 2018), with its module names: `features.0` the stem,
//! `features.1` to `features.17` the inverted residual blocks, `features.18` the
//! 1x1 head conv, `classifier.1` the linear layer. ReLU6, symmetric padding, batch
//! norm eps 1e-5.

use attrib_core::Result;

use super::params::{conv_cfg, Params, TORCH_BN_EPS};
use crate::{Conv2dConfig, Elem};

/// `ConvBNReLU` (`Conv2dNormActivation` in newer torchvision): conv (no bias), batch
/// norm, ReLU6, as `.0`, `.1`, `.2` of the scope.
fn conv_bn_relu6<E: Elem>(
    p: &mut Params<'_, E>,
    shape: [usize; 4],
    cfg: Conv2dConfig,
) -> Result<()> {
    p.conv("0", shape, false, cfg)?;
    p.bn("1", shape[0], TORCH_BN_EPS)?;
    p.b.relu6("2")?;
    Ok(())
}

pub(super) fn mobilenet_v2<E: Elem>(p: &mut Params<'_, E>, classes: usize) -> Result<()> {
    // (expansion t, channels c, repeats n, stride s): the paper's Table 2.
    const BLOCKS: [(usize, usize, usize, usize); 7] = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    p.scope("features.0", |p| {
        conv_bn_relu6(p, [32, 3, 3, 3], conv_cfg(2, 1))
    })?;
    let mut inp = 32;
    let mut idx = 1;
    for (t, c, n, s) in BLOCKS {
        for r in 0..n {
            let stride = if r == 0 { s } else { 1 };
            let hidden = inp * t;
            p.scope(&format!("features.{idx}"), |p| {
                let skip = p.b.current();
                let mut k = 0;
                if t != 1 {
                    p.scope("conv.0", |p| {
                        conv_bn_relu6(p, [hidden, inp, 1, 1], conv_cfg(1, 0))
                    })?;
                    k = 1;
                }
                let dw = Conv2dConfig {
                    groups: hidden,
                    ..conv_cfg(stride, 1)
                };
                p.scope(&format!("conv.{k}"), |p| {
                    conv_bn_relu6(p, [hidden, 1, 3, 3], dw)
                })?;
                p.conv(
                    &format!("conv.{}", k + 1),
                    [c, hidden, 1, 1],
                    false,
                    conv_cfg(1, 0),
                )?;
                p.bn(&format!("conv.{}", k + 2), c, TORCH_BN_EPS)?;
                if stride == 1 && inp == c {
                    p.b.add("add", skip)?;
                }
                Ok(())
            })?;
            inp = c;
            idx += 1;
        }
    }
    p.scope("features.18", |p| {
        conv_bn_relu6(p, [1280, inp, 1, 1], conv_cfg(1, 0))
    })?;
    p.b.global_avg_pool("avgpool")?;
    p.b.flatten("flatten")?;
    p.b.dropout("classifier.0")?;
    p.linear("classifier.1", classes, 1280)
}
