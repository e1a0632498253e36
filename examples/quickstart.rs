//! A tiny network explained with three methods. Run: `cargo run -p attrib-examples --example quickstart`.

use attrib_core::{Attribution, Target};
use attrib_dfdx::{Conv2d, Conv2dConfig, Linear, NetworkBuilder, Padding};
use attrib_methods::{GradCam, GuidedBackprop, Saliency};
use ndarray::Array4;

fn main() -> Result<(), attrib_core::Error> {
    let same = Conv2dConfig {
        padding: Padding::symmetric(1),
        ..Default::default()
    };
    let w: Vec<f32> = (0..4 * 3 * 9)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0)
        .collect();
    let mut b = NetworkBuilder::<f32>::new([3, 8, 8]);
    b.conv2d("conv", Conv2d::from_vec(w, [4, 3, 3, 3], None, same)?)?
        .relu("relu")?;
    b.global_avg_pool("gap")?.flatten("flatten")?;
    b.linear(
        "fc",
        Linear::from_vec(
            vec![1.0, -1.0, 0.5, 2.0, -0.5, 1.0, 1.0, -1.0],
            [2, 4],
            None,
        )?,
    )?;
    let net = b.build()?;
    let x = Array4::from_shape_fn((1, 3, 8, 8), |(_, c, i, j)| ((c + i * j) % 5) as f32 / 5.0);
    let target = Target::TopPredicted;
    let cam = GradCam::new().attribute(&net, x.view(), &target)?; // (1, 8, 8) at `relu`
    let sal = Saliency.attribute(&net, x.view(), &target)?; // (1, 8, 8)
    let gb = GuidedBackprop.attribute(&net, x.view(), &target)?; // (1, 3, 8, 8)
    println!(
        "class {:?}; grad-cam {:?}, saliency {:?}, guided backprop {:?}",
        cam.classes,
        cam.values.shape(),
        sal.values.shape(),
        gb.values.shape()
    );
    println!(
        "grad-cam row 3: {:?}",
        cam.spatial()?.slice(ndarray::s![0, 3, ..]).to_vec()
    );
    Ok(())
}
