//! The gradients the methods rely on, against central differences in f64: the input
//! gradient (gradient, saliency) and a tapped layer's gradient (Grad-CAM), the latter
//! by differentiating the network's upper half with respect to its input.

mod common;

use attrib_core::{Attribution, BackwardRequest, Model, Target};
use attrib_dfdx::{Conv2d, Conv2dConfig, Linear, Network, NetworkBuilder, Padding};
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
