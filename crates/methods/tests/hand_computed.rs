//! Every method on the tiny network of `common::tiny`, against values computed by
//! hand (the derivations are in the comments).

mod common;

use attrib_core::{Attribution, MapLayout, Model, Objective, Target};
use attrib_methods::{
    Cam, Deconvnet, GradCam, Gradient, GuidedBackprop, GuidedGradCam, Occlusion, Saliency,
};
use common::{tiny, tiny_input};
use ndarray::{array, ArrayD, IxDyn};

fn assert_map(got: &ArrayD<f64>, expected: ArrayD<f64>) {
    assert_eq!(got.shape(), expected.shape());
    for (g, e) in got.iter().zip(expected.iter()) {
        assert!((g - e).abs() < 1e-12, "got\n{got}\nexpected\n{expected}");
    }
}

// conv maps: ch0 = [[4,-3],[1,3]], ch1 = [[-1,-1],[2,-3]]
// ReLU:      A0  = [[4, 0],[1,3]], A1  = [[ 0, 0],[2, 0]]; GAP = (2, 0.5)
// scores:    S0 = 2 + 1 + 0.5 = 3.5,  S1 = -2 + 0.5 - 0.5 = -2

#[test]
fn scores() {
    let s = tiny().forward(tiny_input().view()).unwrap();
    assert_eq!(s, array![[3.5, -2.0]]);
}

#[test]
fn gradient_and_saliency() {
    // Class 0: dS/dA^k = w_k / 4 = (0.25, 0.5), masked by the ReLU, then the transposed
    // conv: k0 sends g to x(i,j), x(i+1,j+1); k1 sends +g to x(i,j+1), -g to x(i+1,j).
    let net = tiny();
    let g = Gradient
        .attribute(&net, tiny_input().view(), &Target::Class(0))
        .unwrap();
    assert_eq!(g.layout, MapLayout::Input);
    assert_eq!(g.classes, vec![Some(0)]);
    let expected = array![[[[0.25, 0.0, 0.0], [0.25, 1.0, 0.0], [-0.5, 0.25, 0.25]]]];
    assert_map(&g.values, expected.clone().into_dyn());
    let s = Saliency
        .attribute(&net, tiny_input().view(), &Target::Class(0))
        .unwrap();
    assert_eq!(s.layout, MapLayout::Pixel);
    assert_map(
        &s.values,
        expected
            .mapv(f64::abs)
            .into_shape_with_order((1, 3, 3))
            .unwrap()
            .into_dyn(),
    );
    // Class 1: dS/dA = (-0.25, 0.25).
    let g1 = Gradient
        .attribute(&net, tiny_input().view(), &Target::Class(1))
        .unwrap();
    let e1 = array![[[
        [-0.25, 0.0, 0.0],
        [-0.25, -0.25, 0.0],
        [-0.25, -0.25, -0.25]
    ]]];
    assert_map(&g1.values, e1.into_dyn());
}

#[test]
fn guided_backprop_and_deconvnet() {
    let net = tiny();
    // Class 1, guided: ch0's upstream -0.25 is dropped; ch1 passes only at (1,0) where
    // the forward is positive: x11 += 0.25, x20 -= 0.25.
    let gb = GuidedBackprop
        .attribute(&net, tiny_input().view(), &Target::Class(1))
        .unwrap();
    assert_map(
        &gb.values,
        array![[[[0.0, 0.0, 0.0], [0.0, 0.25, 0.0], [-0.25, 0.0, 0.0]]]].into_dyn(),
    );
    // Deconvnet ignores the forward: ch1 passes 0.25 at all four positions.
    let dc = Deconvnet
        .attribute(&net, tiny_input().view(), &Target::Class(1))
        .unwrap();
    assert_map(
        &dc.values,
        array![[[[0.0, 0.25, 0.25], [-0.25, 0.0, 0.25], [-0.25, -0.25, 0.0]]]].into_dyn(),
    );
}

#[test]
fn cam_and_grad_cam() {
    let net = tiny();
    // CAM_0 = A0 + 2 A1 = [[4,0],[5,3]]; mean 3 = S0 - b0.
    let cam = Cam
        .attribute(&net, tiny_input().view(), &Target::Class(0))
        .unwrap();
    assert_eq!(
        cam.layout,
        MapLayout::Layer {
            name: "relu".into()
        }
    );
    assert_map(&cam.values, array![[[4.0, 0.0], [5.0, 3.0]]].into_dyn());
    // CAM_1 = -A0 + A1 = [[-4,0],[1,-3]] (signed).
    let cam1 = Cam
        .attribute(&net, tiny_input().view(), &Target::Class(1))
        .unwrap();
    assert_map(&cam1.values, array![[[-4.0, 0.0], [1.0, -3.0]]].into_dyn());
    // Grad-CAM_0: alpha = (0.25, 0.5) -> [[1,0],[1.25,0.75]].
    let gc = GradCam::new()
        .attribute(&net, tiny_input().view(), &Target::Class(0))
        .unwrap();
    assert_map(&gc.values, array![[[1.0, 0.0], [1.25, 0.75]]].into_dyn());
    // Grad-CAM_1: alpha = (-0.25, 0.25) -> ReLU([[-1,0],[0.25,-0.75]]).
    let gc1 = GradCam::new()
        .attribute(&net, tiny_input().view(), &Target::Class(1))
        .unwrap();
    assert_map(&gc1.values, array![[[0.0, 0.0], [0.25, 0.0]]].into_dyn());
    // Counterfactual: alpha = (0.25, -0.25) -> ReLU([[1,0],[-0.25,0.75]]).
    let cf = GradCam::counterfactual()
        .attribute(&net, tiny_input().view(), &Target::Class(1))
        .unwrap();
    assert_map(&cf.values, array![[[1.0, 0.0], [0.0, 0.75]]].into_dyn());
    assert_eq!(
        <GradCam as Attribution<f64, attrib_dfdx::Network<f64>>>::name(&GradCam::counterfactual()),
        "counterfactual-grad-cam"
    );
}

#[test]
fn guided_grad_cam() {
    // Grad-CAM_1 [[0,0],[0.25,0]] upsampled to 3x3 (align_corners=False: rows 0, mid, 1)
    // = [[0,0,0],[0.125,0.0625,0],[0.25,0.125,0]]; times guided backprop.
    let net = tiny();
    let ggc = GuidedGradCam::new()
        .attribute(&net, tiny_input().view(), &Target::Class(1))
        .unwrap();
    assert_map(
        &ggc.values,
        array![[[[0.0, 0.0, 0.0], [0.0, 0.015625, 0.0], [-0.0625, 0.0, 0.0]]]].into_dyn(),
    );
}

#[test]
fn occlusion() {
    // 2x2 zero windows at stride 1: S0 drops by 1.75, 2.5, 1.75, 1.75 for the windows at
    // (0,0), (0,1), (1,0), (1,1); each pixel averages the windows covering it.
    let net = tiny();
    let occ = Occlusion::new(2, 1)
        .attribute(&net, tiny_input().view(), &Target::Class(0))
        .unwrap();
    let expected = array![[
        [1.75, 2.125, 2.5],
        [1.75, 1.9375, 2.125],
        [1.75, 1.75, 1.75]
    ]];
    assert_map(&occ.values, expected.into_dyn());
    // The same with one occluded image per forward pass.
    let occ1 = Occlusion::new(2, 1)
        .max_batch(1)
        .attribute(&net, tiny_input().view(), &Target::Class(0))
        .unwrap();
    assert_eq!(occ.values, occ1.values);
    // Stride 2 with a 2x2 window on 3 pixels: ceil((3 - 2) / 2) + 1 = 2 windows per
    // axis, at 0 and 2, the second cropped to one pixel (Captum's convention):
    // (0,0) drops 1.75 as above; (0,2) zeroes x(0,2) = 2 and x(1,2) = -2, which
    // only feed rectified-away conv outputs: drop 0; (2,0) zeroes x(2,0) = x(2,1) = 1:
    // c0(1,0) = 0 + 1 -> 0 lowers A0's mean by 1/4, c1(1,0) = 3 - 1 -> 3 raises A1's
    // by 1/4, S0 changes by -0.25 + 2 * 0.25: drop -0.25; (2,2) zeroes x(2,2) = 0:
    // drop 0. Every pixel is covered by exactly one window.
    let occ2 = Occlusion::new(2, 2)
        .attribute(&net, tiny_input().view(), &Target::Class(0))
        .unwrap();
    assert_map(
        &occ2.values,
        array![[[1.75, 1.75, 0.0], [1.75, 1.75, 0.0], [-0.25, -0.25, 0.0]]].into_dyn(),
    );
    assert_eq!(Occlusion::new(2, 2).windows(3, 3), 4);
}

#[test]
fn any_differentiable_output() {
    let net = tiny();
    let x = tiny_input();
    // A seed is the linear combination of the class gradients.
    let g0 = Gradient
        .attribute(&net, x.view(), &Target::Class(0))
        .unwrap()
        .values;
    let g1 = Gradient
        .attribute(&net, x.view(), &Target::Class(1))
        .unwrap()
        .values;
    let gs = Gradient
        .attribute(&net, x.view(), &Target::Seed(array![[0.5, -2.0]]))
        .unwrap();
    assert_map(&gs.values, &g0 * 0.5 - &g1 * 2.0);
    assert_eq!(gs.classes, vec![None]);
    // Softmax probability of class 0: seed p0 (e0 - p).
    let p0 = 1.0 / (1.0 + (-5.5f64).exp());
    let (d0, d1) = (p0 * (1.0 - p0), -p0 * (1.0 - p0));
    let gp = Gradient
        .attribute(
            &net,
            x.view(),
            &Target::Objective(Objective::softmax_probability(0)),
        )
        .unwrap();
    assert_map(&gp.values, &g0 * d0 + &g1 * d1);
    // Occlusion of a seed measures the seed's linear combination.
    let occ = Occlusion::new(3, 1)
        .attribute(&net, x.view(), &Target::Seed(array![[1.0, 1.0]]))
        .unwrap();
    // Everything occluded: both scores go to their biases, 0.5 and -0.5; drop 1.5 - 0.
    assert_map(&occ.values, ArrayD::from_elem(IxDyn(&[1, 3, 3]), 1.5));
}

#[test]
fn f32_end_to_end() {
    // The same network and input in f32: every value above is exactly representable.
    let net = common::tiny_in::<f32>();
    let x = tiny_input().mapv(|v| v as f32);
    let gc = GradCam::new()
        .attribute(&net, x.view(), &Target::Class(0))
        .unwrap();
    assert_eq!(gc.values, array![[[1.0f32, 0.0], [1.25, 0.75]]].into_dyn());
    let ggc = GuidedGradCam::new()
        .attribute(&net, x.view(), &Target::Class(1))
        .unwrap();
    assert_eq!(
        ggc.values,
        array![[[
            [0.0f32, 0.0, 0.0],
            [0.0, 0.015625, 0.0],
            [-0.0625, 0.0, 0.0]
        ]]]
        .into_dyn()
    );
    let occ = Occlusion::new(2, 1)
        .attribute(&net, x.view(), &Target::Class(0))
        .unwrap();
    assert_eq!(
        occ.values,
        array![[
            [1.75f32, 2.125, 2.5],
            [1.75, 1.9375, 2.125],
            [1.75, 1.75, 1.75]
        ]]
        .into_dyn()
    );
}
