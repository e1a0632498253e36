//! Networks the method tests share.
#![allow(dead_code)]

use attrib_dfdx::{
    Conv2d, Conv2dConfig, Elem, Linear, Network, NetworkBuilder, Padding, Pool2dConfig,
};
use ndarray::{array, Array4};
use proptest::prelude::{any, Strategy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The hand-computed network: conv 1->2 (2x2, no bias) -> ReLU -> GAP -> linear(2).
///
/// k0 = [[1,0],[0,1]], k1 = [[0,1],[-1,0]]; W = [[1,2],[-1,1]], b = [0.5,-0.5].
pub fn tiny() -> Network<f64> {
    tiny_in()
}

/// [`tiny`] in any element type (every value in it is exact in f32).
pub fn tiny_in<E: Elem>() -> Network<E> {
    let e = |v: f64| E::of(v);
    let conv = Conv2d::new(
        array![
            [[[e(1.0), e(0.0)], [e(0.0), e(1.0)]]],
            [[[e(0.0), e(1.0)], [e(-1.0), e(0.0)]]]
        ],
        None,
        Conv2dConfig::default(),
    )
    .unwrap();
    let fc = Linear::new(
        array![[e(1.0), e(2.0)], [e(-1.0), e(1.0)]],
        Some(array![e(0.5), e(-0.5)]),
    )
    .unwrap();
    let mut b = NetworkBuilder::new([1, 3, 3]);
    b.conv2d("conv", conv).unwrap().relu("relu").unwrap();
    b.global_avg_pool("gap")
        .unwrap()
        .flatten("flatten")
        .unwrap()
        .linear("fc", fc)
        .unwrap();
    b.build().unwrap()
}

/// The hand-computed input: conv maps [[4,-3],[1,3]] and [[-1,-1],[2,-3]], scores (3.5, -2).
pub fn tiny_input() -> Array4<f64> {
    array![[[[1.0, -1.0, 2.0], [0.0, 3.0, -2.0], [1.0, 1.0, 0.0]]]]
}

/// Random network options: 1-3 input channels, 4-7 pixels, 2-4 hidden channels, an
/// optional second convolution and max-pool, ReLU or ReLU6, 2-4 classes.
pub fn shapes() -> impl Strategy<Value = Shape> {
    (
        1usize..=3,
        4usize..=7,
        2usize..=4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        2usize..=4,
    )
        .prop_map(
            |(in_ch, size, hidden, second_conv, max_pool, relu6, classes)| Shape {
                in_ch,
                size,
                hidden,
                second_conv,
                max_pool,
                relu6,
                classes,
            },
        )
}

/// Options for a random network.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub in_ch: usize,
    pub size: usize,
    pub hidden: usize,
    pub second_conv: bool,
    pub max_pool: bool,
    pub relu6: bool,
    pub classes: usize,
}

/// A random conv net ending in GAP + linear, and a random input batch.
pub fn random_net(seed: u64, s: Shape, batch: usize) -> (Network<f64>, Array4<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let cfg = Conv2dConfig {
        padding: Padding::symmetric(1),
        ..Conv2dConfig::default()
    };
    let mut b = NetworkBuilder::new([s.in_ch, s.size, s.size]);
    let c1 = Conv2d::from_vec(
        v(s.hidden * s.in_ch * 9),
        [s.hidden, s.in_ch, 3, 3],
        Some(v(s.hidden)),
        cfg,
    )
    .unwrap();
    b.conv2d("conv1", c1).unwrap();
    if s.relu6 {
        b.relu6("act1").unwrap();
    } else {
        b.relu("act1").unwrap();
    }
    if s.max_pool {
        b.max_pool("pool", Pool2dConfig::new(2, 2, 0)).unwrap();
    }
    if s.second_conv {
        let c2 = Conv2d::from_vec(
            v(s.hidden * s.hidden * 9),
            [s.hidden, s.hidden, 3, 3],
            Some(v(s.hidden)),
            cfg,
        )
        .unwrap();
        b.conv2d("conv2", c2).unwrap().relu("act2").unwrap();
    }
    b.global_avg_pool("gap")
        .unwrap()
        .flatten("flatten")
        .unwrap();
    let fc = Linear::from_vec(
        v(s.classes * s.hidden),
        [s.classes, s.hidden],
        Some(v(s.classes)),
    )
    .unwrap();
    b.linear("fc", fc).unwrap();
    let x = Array4::from_shape_vec(
        (batch, s.in_ch, s.size, s.size),
        v(batch * s.in_ch * s.size * s.size),
    )
    .unwrap();
    (b.build().unwrap(), x)
}
