//! The baseline methods of issue 12 on the tiny network of `common::tiny`, against
//! values computed by hand (derivations in the comments; see `hand_computed.rs` for
//! the network's forward pass).
//!
//! conv maps: ch0 = [[4,-3],[1,3]], ch1 = [[-1,-1],[2,-3]]
//! ReLU:      A0  = [[4, 0],[1,3]], A1  = [[ 0, 0],[2, 0]]; GAP = (2, 0.5)
//! scores:    S0 = 3.5, S1 = -2; dS/dA is constant over positions (GAP):
//!            class 0 g = (0.25, 0.5), class 1 g = (-0.25, 0.25).

mod common;

use attrib_core::{Attribution, MapLayout, Target};
use attrib_methods::{
    AblationCam, EigenCam, GradCam, GradCamPlusPlus, Gradient, GuidedGradCam, HiResCam,
    InputXGradient, IntegratedGradients, Integration, Interpolation, LayerCam, NoiseKind,
    NoiseTunnel, ScoreCam, XGradCam,
};
use common::{tiny, tiny_input};
use ndarray::{array, Array4, ArrayD};

fn assert_close(got: &ArrayD<f64>, expected: ArrayD<f64>, tol: f64) {
    assert_eq!(got.shape(), expected.shape());
    for (g, e) in got.iter().zip(expected.iter()) {
        assert!((g - e).abs() <= tol, "got\n{got}\nexpected\n{expected}");
    }
}

fn run<A: Attribution<f64, attrib_dfdx::Network<f64>>>(m: &A, class: usize) -> ArrayD<f64> {
    m.attribute(&tiny(), tiny_input().view(), &Target::Class(class))
        .unwrap()
        .values
}

/// x ⊙ dS0/dx: the gradient of `hand_computed.rs`, times the input.
fn input_x_gradient_0() -> ArrayD<f64> {
    array![[[[0.25, 0.0, 0.0], [0.0, 3.0, 0.0], [-0.5, 0.25, 0.0]]]].into_dyn()
}

#[test]
fn hires_cam_and_layer_cam() {
    // HiResCAM: ReLU(sum_k g_k ⊙ A^k); the gradient is constant, so class 0 is
    // Grad-CAM's [[1,0],[1.25,0.75]], class 1 ReLU(-0.25 A0 + 0.25 A1) = [[0,0],[0.25,0]].
    assert_close(
        &run(&HiResCam::new(), 0),
        array![[[1.0, 0.0], [1.25, 0.75]]].into_dyn(),
        1e-15,
    );
    assert_close(
        &run(&HiResCam::new(), 1),
        array![[[0.0, 0.0], [0.25, 0.0]]].into_dyn(),
        1e-15,
    );
    // LayerCAM: ReLU(sum_k ReLU(g_k) ⊙ A^k): class 1 keeps only 0.25 A1 = [[0,0],[0.5,0]].
    assert_close(
        &run(&LayerCam::new(), 0),
        array![[[1.0, 0.0], [1.25, 0.75]]].into_dyn(),
        1e-15,
    );
    assert_close(
        &run(&LayerCam::new(), 1),
        array![[[0.0, 0.0], [0.5, 0.0]]].into_dyn(),
        1e-15,
    );
}

#[test]
fn xgrad_cam() {
    // w_k = sum_ij g A^k_ij / (sum_ij A^k_ij + 1e-7): w0 = 0.25 * 8 / (8 + 1e-7),
    // w1 = 0.5 * 2 / (2 + 1e-7); ReLU(w0 A0 + w1 A1).
    let (w0, w1) = (2.0 / (8.0 + 1e-7), 1.0 / (2.0 + 1e-7));
    let expected = array![[[4.0 * w0, 0.0], [w0 + 2.0 * w1, 3.0 * w0]]];
    assert_close(&run(&XGradCam::new(), 0), expected.into_dyn(), 1e-15);
}

#[test]
fn grad_cam_plus_plus() {
    // alpha = g^2 / (2 g^2 + sum(A) g^3 + 1e-6), w = sum_ij ReLU(g) alpha.
    // ch0: g = 0.25, sum A0 = 8: alpha = 0.0625 / (0.125 + 0.125 + 1e-6), w0 = 4 * 0.25 alpha.
    // ch1: g = 0.5, sum A1 = 2: alpha = 0.25 / (0.5 + 0.25 + 1e-6), w1 = 4 * 0.5 alpha.
    let w0 = 4.0 * 0.25 * 0.0625 / (0.25 + 1e-6);
    let w1 = 4.0 * 0.5 * 0.25 / (0.75 + 1e-6);
    let expected = array![[[4.0 * w0, 0.0], [w0 + 2.0 * w1, 3.0 * w0]]];
    assert_close(&run(&GradCamPlusPlus::new(), 0), expected.into_dyn(), 1e-15);
    // ~ [[1, 0], [1.5833, 0.75]] without the 1e-6s.
    assert!((w0 - 0.25).abs() < 1e-6 && (w1 - 2.0 / 3.0).abs() < 1e-6);
}

#[test]
fn score_cam() {
    // Each channel min-max normalised, upsampled to 3x3 by align-corners bilinear:
    // M0 = [[1,.5,0],[.625,.5,.375],[.25,.5,.75]], M1 = [[0,0,0],[.5,.25,0],[1,.5,0]].
    // x ⊙ M0 = [[1,-.5,0],[0,1.5,-.75],[.25,.5,0]]: conv ch0 [[2.5,-1.25],[.5,1.5]],
    //   ch1 [[-.5,-1.5],[1.25,-1.25]]; GAP (1.125, .3125); S0 = 2.25.
    // x ⊙ M1 = [[0,0,0],[0,.75,0],[1,.5,0]]: conv ch0 [[.75,0],[.5,.75]],
    //   ch1 [[0,-.75],[-.25,-.5]]; GAP (.5, 0); S0 = 1.
    // Weights softmax(2.25, 1) (the 1e-8 in the normaliser moves them by ~1e-9).
    let w0 = 1.0 / (1.0 + (-1.25f64).exp());
    let w1 = 1.0 - w0;
    let expected = array![[[4.0 * w0, 0.0], [w0 + 2.0 * w1, 3.0 * w0]]];
    assert_close(&run(&ScoreCam::new(), 0), expected.into_dyn(), 1e-7);
    // One masked copy per forward pass: the same.
    assert_close(
        &run(&ScoreCam::new().max_batch(1), 0),
        run(&ScoreCam::new(), 0),
        1e-15,
    );
}

#[test]
fn ablation_cam() {
    // The layer's smallest activation is 0, so ablated channels are set to 0.
    // Without A0: GAP (0, .5), S0 = 1.5, w0 = (3.5 - 1.5) / 3.5 = 4/7;
    // without A1: GAP (2, 0), S0 = 2.5, w1 = 1/7 * ... = (3.5 - 2.5) / 3.5 = 2/7.
    // ReLU(4/7 A0 + 2/7 A1) = [[16/7, 0], [8/7, 12/7]].
    let expected = array![[[16.0 / 7.0, 0.0], [8.0 / 7.0, 12.0 / 7.0]]];
    assert_close(
        &run(&AblationCam::new(), 0),
        expected.clone().into_dyn(),
        1e-14,
    );
    assert_close(
        &run(&AblationCam::new().max_batch(1), 0),
        expected.into_dyn(),
        1e-14,
    );
}

#[test]
fn eigen_cam() {
    // Positions x channels, centred (channel means 2, 0.5):
    // (2,-.5), (-2,-.5), (-1,1.5), (1,-.5). Gram matrix [[10,-2],[-2,3]]: top eigenvalue
    // l = (13 + sqrt 65) / 2, eigenvector (1, r), r = (10 - l) / 2 = (7 - sqrt 65) / 4.
    // Projections (2 - r/2, -2 - r/2, -1 + 1.5 r, 1 - r/2) / sqrt(1 + r^2)
    // ~ (2.13, -1.87, -1.40, 1.13): the largest magnitude is positive, no flip; ReLU.
    let r = (7.0 - 65f64.sqrt()) / 4.0;
    let norm = (1.0 + r * r).sqrt();
    let expected = array![[[(2.0 - r / 2.0) / norm, 0.0], [0.0, (1.0 - r / 2.0) / norm]]];
    assert_close(
        &run(&EigenCam::new(), 0),
        expected.clone().into_dyn(),
        1e-12,
    );
    // No gradient: the class does not matter.
    assert_close(&run(&EigenCam::new(), 1), expected.into_dyn(), 1e-12);
}

#[test]
fn integrated_gradients_and_input_x_gradient() {
    // The conv has no bias and ReLU is positively homogeneous, so S0(a x) = a (S0(x)
    // - 0.5) + 0.5 and the gradient is the same at every a > 0: IG = x ⊙ dS0/dx,
    // summing to S0(x) - S0(0) = 3. At a = 0 every rectifier sits at its kink, where
    // the gradient is 0 (PyTorch's ReLU'(0)).
    let ixg = input_x_gradient_0();
    assert_close(&run(&InputXGradient, 0), ixg.clone(), 1e-15);
    assert_close(&run(&IntegratedGradients::new(), 0), ixg.clone(), 1e-12);
    assert!((run(&IntegratedGradients::new(), 0).sum() - 3.0).abs() < 1e-12);
    // Riemann sums at 4 steps: left (0, .25, .5, .75) loses the a = 0 point: 3/4;
    // right and middle keep all four; trapezoid (0, 1/3, 2/3, 1) weights
    // (1/8, 1/4, 1/4, 1/8) without the first: 5/8.
    for (m, f) in [
        (Integration::RiemannLeft, 0.75),
        (Integration::RiemannRight, 1.0),
        (Integration::RiemannMiddle, 1.0),
        (Integration::RiemannTrapezoid, 0.625),
    ] {
        let got = run(
            &IntegratedGradients::new().method(m).steps(4).max_batch(3),
            0,
        );
        assert_close(&got, &ixg * f, 1e-15);
    }
}

#[test]
fn noise_tunnels() {
    // Noise +c and -c (c = 0.1) on every pixel: the conv's ch0 moves by 2c, ch1 by 0,
    // no rectifier changes state, so the gradient g stays. SmoothGrad of the gradient
    // is g; of input x gradient mean((x ± c) g) = x g; its square mean (x ± c)^2 g^2 =
    // (x^2 + c^2) g^2; VarGrad c^2 g^2.
    let c = 0.1;
    let mut noise = Array4::<f64>::from_elem((2, 1, 3, 3), c);
    noise.slice_mut(ndarray::s![1, .., .., ..]).fill(-c);
    let tunnel = |kind, ixg: bool| {
        let t = Target::Class(0);
        let (net, x) = (tiny(), tiny_input());
        if ixg {
            NoiseTunnel::new(InputXGradient, kind)
                .samples(2)
                .with_noise(noise.clone())
                .attribute(&net, x.view(), &t)
        } else {
            NoiseTunnel::new(Gradient, kind)
                .samples(2)
                .with_noise(noise.clone())
                .attribute(&net, x.view(), &t)
        }
        .unwrap()
    };
    let g = run(&Gradient, 0);
    let x = tiny_input().into_dyn();
    let sg = tunnel(NoiseKind::SmoothGrad, false);
    assert_eq!(sg.layout, MapLayout::Input);
    assert_close(&sg.values, g.clone(), 1e-14);
    assert_close(&tunnel(NoiseKind::SmoothGrad, true).values, &x * &g, 1e-14);
    let g2 = g.mapv(|v| v * v);
    assert_close(
        &tunnel(NoiseKind::SmoothGradSq, true).values,
        (x.mapv(|v| v * v + c * c)) * &g2,
        1e-13,
    );
    assert_close(
        &tunnel(NoiseKind::VarGrad, true).values,
        &g2 * (c * c),
        1e-13,
    );
}

#[test]
fn per_channel_grad_cam_and_nearest_guided_grad_cam() {
    // alpha_k A^k, no sum and no ReLU: class 0 (0.25 A0, 0.5 A1).
    let pc = GradCam::new()
        .per_channel()
        .attribute(&tiny(), tiny_input().view(), &Target::Class(0))
        .unwrap();
    assert_eq!(
        pc.layout,
        MapLayout::LayerChannels {
            name: "relu".into()
        }
    );
    assert_close(
        &pc.values,
        array![[[[1.0, 0.0], [0.25, 0.75]], [[0.0, 0.0], [1.0, 0.0]]]].into_dyn(),
        1e-15,
    );
    // Class 1: Grad-CAM [[0,0],[0.25,0]] to 3x3 by nearest (source floor(2 i / 3):
    // 0, 0, 1) = [[0,0,0],[0,0,0],[.25,.25,0]], times guided backprop
    // [[0,0,0],[0,.25,0],[-.25,0,0]].
    let ggc = run(&GuidedGradCam::new().interpolate(Interpolation::Nearest), 1);
    assert_close(
        &ggc,
        array![[[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-0.0625, 0.0, 0.0]]]].into_dyn(),
        1e-15,
    );
}
