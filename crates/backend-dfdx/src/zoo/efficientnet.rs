//! EfficientNet-Lite0 as the `efficientnet-lite-pytorch` package defines it: ReLU6,
//! depthwise convolutions, TensorFlow "same" padding, batch norm eps 1e-3.

use attrib_core::Result;

use super::params::Params;
use crate::{Conv2dConfig, Elem, Padding};

/// TensorFlow "same" padding fixed for the layer's nominal input size, as the
/// package's `Conv2dStaticSamePadding` computes it for 224x224 images.
fn static_same(size: usize, k: usize, s: usize) -> Conv2dConfig {
    Conv2dConfig {
        stride: [s, s],
        padding: Padding::Explicit(Padding::Same.resolve(size, size, [k, k], [s, s], [1, 1])),
        ..Conv2dConfig::default()
    }
}

pub(super) fn efficientnet_lite0<E: Elem>(p: &mut Params<'_, E>, classes: usize) -> Result<()> {
    const EPS: f64 = 1e-3;
    // (repeats, kernel, stride, expand, in, out): efficientnet_lite_builder's lite0.
    const BLOCKS: [(usize, usize, usize, usize, usize, usize); 7] = [
        (1, 3, 1, 1, 32, 16),
        (2, 3, 2, 6, 16, 24),
        (2, 5, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112),
        (4, 5, 2, 6, 112, 192),
        (1, 3, 1, 6, 192, 320),
    ];
    let mut size = 224;
    p.conv("_conv_stem", [32, 3, 3, 3], false, static_same(size, 3, 2))?;
    size = size.div_ceil(2);
    p.bn("_bn0", 32, EPS)?;
    p.b.relu6("_swish0")?;
    let mut idx = 0;
    for (repeats, k, stride, expand, c_in, c_out) in BLOCKS {
        for r in 0..repeats {
            let (inp, s) = if r == 0 { (c_in, stride) } else { (c_out, 1) };
            let oup = inp * expand;
            let block_size = size;
            p.scope(&format!("_blocks.{idx}"), |p| {
                let skip = p.b.current();
                if expand != 1 {
                    p.conv(
                        "_expand_conv",
                        [oup, inp, 1, 1],
                        false,
                        static_same(block_size, 1, 1),
                    )?;
                    p.bn("_bn0", oup, EPS)?;
                    p.b.relu6("_swish0")?;
                }
                let dw = Conv2dConfig {
                    groups: oup,
                    ..static_same(block_size, k, s)
                };
                p.conv("_depthwise_conv", [oup, 1, k, k], false, dw)?;
                p.bn("_bn1", oup, EPS)?;
                p.b.relu6("_swish1")?;
                p.conv(
                    "_project_conv",
                    [c_out, oup, 1, 1],
                    false,
                    static_same(block_size.div_ceil(s), 1, 1),
                )?;
                p.bn("_bn2", c_out, EPS)?;
                if s == 1 && inp == c_out {
                    p.b.add("add", skip)?;
                }
                Ok(())
            })?;
            size = size.div_ceil(s);
            idx += 1;
        }
    }
    p.conv(
        "_conv_head",
        [1280, 320, 1, 1],
        false,
        static_same(size, 1, 1),
    )?;
    p.bn("_bn1", 1280, EPS)?;
    p.b.relu6("_swish1")?;
    p.b.global_avg_pool("_avg_pooling")?;
    p.b.flatten("flatten")?;
    p.b.dropout("_dropout")?;
    p.linear("_fc", classes, 1280)
}
