//! The gradients the methods rely on, against central differences in f64: the input
//! gradient (gradient, saliency) and a tapped layer's gradient (Grad-CAM) at every
//! tap position, the input included, by differentiating the network above the tap
//! with respect to its input.

mod common;

use attrib_core::{Attribution, BackwardRequest, LayerTap, Model, RectifierKind, Target};
use attrib_dfdx::{
    BatchNorm2d, Conv2d, Conv2dConfig, Layer, Linear, Network, NetworkBuilder, Padding,
    Pool2dConfig,
};
use attrib_methods::{GradCam, Gradient};
use ndarray::{Array2, Array4, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn numeric(x: &Array4<f64>, f: impl Fn(&Array4<f64>) -> f64) -> Array4<f64> {
    let h = 1e-6;
    let mut g = Array4::zeros(x.dim());
    for (i, gi) in g.iter_mut().enumerate() {
        let (mut p, mut m) = (x.clone(), x.clone());
        p.as_slice_mut().unwrap()[i] += h;
        m.as_slice_mut().unwrap()[i] -= h;
        *gi = (f(&p) - f(&m)) / (2.0 * h);
    }
    g
}

fn max_diff(a: &Array4<f64>, b: &Array4<f64>) -> (f64, f64) {
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    (d, b.iter().fold(0.0f64, |m, v| m.max(v.abs())))
}

struct Parts {
    full: Network<f64>,
    upper: Network<f64>,
}

/// conv1 -> relu -> [tap] -> conv2 -> relu -> GAP -> fc, and the same from the tap up.
fn parts(seed: u64) -> Parts {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let cfg = Conv2dConfig {
        padding: Padding::symmetric(1),
        stride: [2, 2],
        ..Conv2dConfig::default()
    };
    let (w1, b1, w2, b2, wf, bf) = (v(4 * 2 * 9), v(4), v(3 * 4 * 9), v(3), v(3 * 3), v(3));
    let c1 = Conv2d::from_vec(w1, [4, 2, 3, 3], Some(b1), cfg).unwrap();
    let c2 = || Conv2d::from_vec(w2.clone(), [3, 4, 3, 3], Some(b2.clone()), cfg).unwrap();
    let fc = || Linear::from_vec(wf.clone(), [3, 3], Some(bf.clone())).unwrap();
    let mut b = NetworkBuilder::new([2, 8, 8]);
    b.conv2d("conv1", c1).unwrap().relu("relu1").unwrap();
    b.conv2d("conv2", c2()).unwrap().relu("relu2").unwrap();
    b.global_avg_pool("gap")
        .unwrap()
        .flatten("flatten")
        .unwrap()
        .linear("fc", fc())
        .unwrap();
    let mut u = NetworkBuilder::new([4, 4, 4]);
    u.conv2d("conv2", c2()).unwrap().relu("relu2").unwrap();
    u.global_avg_pool("gap")
        .unwrap()
        .flatten("flatten")
        .unwrap()
        .linear("fc", fc())
        .unwrap();
    Parts {
        full: b.build().unwrap(),
        upper: u.build().unwrap(),
    }
}

#[test]
fn input_gradient_matches_finite_differences() {
    let p = parts(11);
    let mut rng = StdRng::seed_from_u64(12);
    let x = Array4::from_shape_simple_fn((2, 2, 8, 8), || rng.gen_range(-1.0..1.0));
    let target = Target::PerSample(vec![1, 2]);
    let g = Gradient.attribute(&p.full, x.view(), &target).unwrap();
    let g = g.input_space().unwrap().to_owned();
    let fd = numeric(&x, |x| {
        let s = p.full.forward(x.view()).unwrap();
        s[[0, 1]] + s[[1, 2]]
    });
    let (d, scale) = max_diff(&g, &fd);
    assert!(
        scale > 1e-3 && d < 1e-7 * scale,
        "diff {d:e} scale {scale:e}"
    );
}

#[test]
fn tap_gradient_and_grad_cam_weights_match_finite_differences() {
    let p = parts(21);
    let mut rng = StdRng::seed_from_u64(22);
    let x = Array4::from_shape_simple_fn((2, 2, 8, 8), || rng.gen_range(-1.0..1.0));
    let target = Target::PerSample(vec![0, 2]);
    let out = p
        .full
        .backward(&BackwardRequest::tap(x.view(), &target, "relu1"))
        .unwrap();
    let tap = out.tap("relu1").unwrap();
    // dS/dA at the tap = d upper(A) / dA, by central differences.
    let fd = numeric(&tap.activation, |a| {
        let s = p.upper.forward(a.view()).unwrap();
        s[[0, 0]] + s[[1, 2]]
    });
    let (d, scale) = max_diff(&tap.gradient, &fd);
    assert!(
        scale > 1e-3 && d < 1e-7 * scale,
        "diff {d:e} scale {scale:e}"
    );
    // Grad-CAM at that layer uses alpha = spatial mean of that gradient.
    let gc = GradCam::new()
        .layer("relu1")
        .without_relu()
        .attribute(&p.full, x.view(), &target)
        .unwrap();
    let alpha: Array2<f64> = fd.mean_axis(Axis(3)).unwrap().mean_axis(Axis(2)).unwrap();
    let expected =
        (&tap.activation * &alpha.insert_axis(Axis(2)).insert_axis(Axis(3))).sum_axis(Axis(1));
    let got = gc.spatial().unwrap();
    let d = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(d < 1e-7, "grad-cam vs finite-difference weights: {d:e}");
}

/// A chain of layers with a tap at every value, the input included: conv, batch
/// norm, max pool, ReLU6, conv, ReLU, GAP, flatten, linear.
fn chain(rng: &mut StdRng) -> Vec<(&'static str, Layer<f64>)> {
    let mut v = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let same = Conv2dConfig {
        padding: Padding::symmetric(1),
        ..Conv2dConfig::default()
    };
    let gamma: Vec<f64> = v(3).into_iter().map(|x| 1.0 + 0.5 * x).collect();
    let var: Vec<f64> = v(3).into_iter().map(|x| 1.5 + x).collect();
    let bn = BatchNorm2d::new(&gamma, &v(3), &v(3), &var, 1e-5).unwrap();
    // Shifted so the ReLU6 clips some values at 6 as well as at 0.
    let b1: Vec<f64> = v(3).into_iter().map(|b| 3.0 * b).collect();
    vec![
        (
            "conv1",
            Layer::Conv2d(Conv2d::from_vec(v(3 * 2 * 9), [3, 2, 3, 3], Some(b1), same).unwrap()),
        ),
        ("bn1", Layer::BatchNorm2d(bn)),
        // The pool before the rectifier: a pool over rectified values has ties (at 0
        // and 6), where the network is not differentiable.
        ("pool", Layer::MaxPool2d(Pool2dConfig::new(2, 2, 0))),
        ("relu6", Layer::Rectifier(RectifierKind::Relu6)),
        (
            "conv2",
            Layer::Conv2d(Conv2d::from_vec(v(4 * 3 * 9), [4, 3, 3, 3], Some(v(4)), same).unwrap()),
        ),
        ("relu", Layer::Rectifier(RectifierKind::Relu)),
        ("gap", Layer::AdaptiveAvgPool2d([1, 1])),
        ("flatten", Layer::Flatten),
        (
            "fc",
            Layer::Linear(Linear::from_vec(v(3 * 4), [3, 4], Some(v(3))).unwrap()),
        ),
    ]
}

fn build(input: [usize; 3], layers: &[(&str, Layer<f64>)], alias_input: bool) -> Network<f64> {
    let mut b = NetworkBuilder::new(input);
    if alias_input {
        b.alias("input").unwrap();
    }
    for (name, l) in layers {
        b.layer(name, l.clone()).unwrap();
    }
    b.build().unwrap()
}

#[test]
fn every_tap_position_has_its_true_gradient() {
    // Each tap's gradient against central differences of the network above it, for
    // every position from the input to the classifier's output: a tap whose gradient
    // was not captured would show up as zeros here.
    let mut rng = StdRng::seed_from_u64(31);
    let layers = chain(&mut rng);
    let full = build([2, 6, 6], &layers, true);
    let x = Array4::from_shape_simple_fn((2, 2, 6, 6), || rng.gen_range(-2.0..2.0));
    let target = Target::PerSample(vec![2, 0]);
    let names: Vec<String> = full.layers().into_iter().map(|l| l.name).collect();
    assert_eq!(names[0], "input");
    assert_eq!(names.len(), layers.len() + 1);
    for (k, name) in names.iter().enumerate() {
        for with_input_grad in [false, true] {
            let mut req = BackwardRequest::tap(x.view(), &target, name);
            req.input_grad = with_input_grad;
            let out = full.backward(&req).unwrap();
            let tap = out.tap(name).unwrap();
            let (_, c, h, w) = tap.activation.dim();
            let fd = if k == layers.len() {
                // The output itself: its gradient is the seed.
                let mut seed = Array4::zeros(tap.activation.dim());
                seed[[0, 2, 0, 0]] = 1.0;
                seed[[1, 0, 0, 0]] = 1.0;
                seed
            } else {
                let upper = build([c, h, w], &layers[k..], false);
                numeric(&tap.activation, |a| {
                    let s = upper.forward(a.view()).unwrap();
                    s[[0, 2]] + s[[1, 0]]
                })
            };
            let (d, scale) = max_diff(&tap.gradient, &fd);
            assert!(
                scale > 1e-3 && d < 1e-6 * scale,
                "tap `{name}` (input gradient too: {with_input_grad}): diff {d:e} scale {scale:e}"
            );
        }
    }
}
