//! torchvision's AlexNet.

use attrib_core::Result;

use super::params::{conv_cfg, Params};
use crate::{Elem, Pool2dConfig};

pub(super) fn alexnet<E: Elem>(p: &mut Params<'_, E>, classes: usize) -> Result<()> {
    p.scope("features", |p| {
        p.conv("0", [64, 3, 11, 11], true, conv_cfg(4, 2))?;
        p.b.relu("1")?.max_pool("2", Pool2dConfig::new(3, 2, 0))?;
        p.conv("3", [192, 64, 5, 5], true, conv_cfg(1, 2))?;
        p.b.relu("4")?.max_pool("5", Pool2dConfig::new(3, 2, 0))?;
        p.conv("6", [384, 192, 3, 3], true, conv_cfg(1, 1))?;
        p.b.relu("7")?;
        p.conv("8", [256, 384, 3, 3], true, conv_cfg(1, 1))?;
        p.b.relu("9")?;
        p.conv("10", [256, 256, 3, 3], true, conv_cfg(1, 1))?;
        p.b.relu("11")?.max_pool("12", Pool2dConfig::new(3, 2, 0))?;
        Ok(())
    })?;
    p.b.adaptive_avg_pool("avgpool", [6, 6])?;
    p.b.flatten("flatten")?;
    p.scope("classifier", |p| {
        p.b.dropout("0")?;
        p.linear("1", 4096, 256 * 6 * 6)?;
        p.b.relu("2")?.dropout("3")?;
        p.linear("4", 4096, 4096)?;
        p.b.relu("5")?;
        p.linear("6", classes, 4096)
    })
}
