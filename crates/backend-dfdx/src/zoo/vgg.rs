//! torchvision's VGG-16, with and without batch norm.

use attrib_core::Result;

use super::params::{conv_cfg, Params, TORCH_BN_EPS};
use crate::{Elem, Pool2dConfig};

pub(super) fn vgg16<E: Elem>(
    p: &mut Params<'_, E>,
    batch_norm: bool,
    classes: usize,
) -> Result<()> {
    const CFG: [usize; 18] = [
        64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
    ];
    let mut i = 0;
    let mut c_in = 3;
    p.scope("features", |p| {
        for &c in &CFG {
            if c == 0 {
                p.b.max_pool(&i.to_string(), Pool2dConfig::new(2, 2, 0))?;
                i += 1;
                continue;
            }
            p.conv(&i.to_string(), [c, c_in, 3, 3], true, conv_cfg(1, 1))?;
            i += 1;
            if batch_norm {
                p.bn(&i.to_string(), c, TORCH_BN_EPS)?;
                i += 1;
            }
            p.b.relu(&i.to_string())?;
            i += 1;
            c_in = c;
        }
        Ok(())
    })?;
    p.b.adaptive_avg_pool("avgpool", [7, 7])?;
    p.b.flatten("flatten")?;
    p.scope("classifier", |p| {
        p.linear("0", 4096, 512 * 7 * 7)?;
        p.b.relu("1")?.dropout("2")?;
        p.linear("3", 4096, 4096)?;
        p.b.relu("4")?.dropout("5")?;
        p.linear("6", classes, 4096)
    })
}
