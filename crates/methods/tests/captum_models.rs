//! Captum's own unit-test models (`captum.testing.helpers.basic_models`) through
//! attrib, with the values Captum's tests and Captum itself give, derived by hand in
//! the comments: Grad-CAM at a layer and at the network input, and occlusion where
//! the stride does not tile the input.

use attrib_core::{Attribution, BackwardRequest, LayerTap, Model, Target};
use attrib_dfdx::{Conv2d, Conv2dConfig, Linear, Network, NetworkBuilder};
use attrib_methods::{GradCam, Occlusion};
use ndarray::{Array, Array4, ArrayD, IxDyn};

/// `BasicModel_ConvNet_One_Conv`: conv 1->2 (3x3, all-ones kernels, bias -50 and -75)
/// -> ReLU -> view(-1, 8) -> linear 8->4 (weights five 1s then three -1s per row, no
/// bias) -> ReLU. The input is tapped as `input`.
fn one_conv() -> Network<f64> {
    let conv = Conv2d::from_vec(
        vec![1.0; 18],
        [2, 1, 3, 3],
        Some(vec![-50.0, -75.0]),
        Conv2dConfig::default(),
    )
    .unwrap();
    let row = [1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0];
    let fc = Linear::from_vec(row.repeat(4), [4, 8], Some(vec![0.0; 4])).unwrap();
    let mut b = NetworkBuilder::new([1, 4, 4]);
    b.alias("input").unwrap();
    b.conv2d("conv1", conv).unwrap().relu("relu1").unwrap();
    b.flatten("view")
        .unwrap()
        .linear("fc1", fc)
        .unwrap()
        .relu("relu2")
        .unwrap();
    b.build().unwrap()
}

/// `torch.arange(16).view(1, 1, 4, 4)`.
fn arange() -> Array4<f64> {
    Array::from_shape_fn((1, 1, 4, 4), |(_, _, i, j)| (i * 4 + j) as f64)
}

fn assert_close(got: &ArrayD<f64>, expected: &[f64], shape: &[usize]) {
    let expected = ArrayD::from_shape_vec(IxDyn(shape), expected.to_vec()).unwrap();
    assert_eq!(got.shape(), expected.shape());
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-12, "got\n{got}\nexpected\n{expected}");
    }
}

// The conv sums each 3x3 window of arange(16): 45, 54, 81, 90; minus 50 and 75:
// channel 0 = [[-5, 4], [31, 40]] -> ReLU [[0, 4], [31, 40]], channel 1 =
// [[-30, -21], [6, 15]] -> [[0, 0], [6, 15]]. Flattened (0, 4, 31, 40, 0, 0, 6, 15):
// every output is 0 + 4 + 31 + 40 + 0 - 0 - 6 - 15 = 54.

#[test]
fn scores() {
    let s = one_conv().forward(arange().view()).unwrap();
    assert_eq!(s.as_slice().unwrap(), &[54.0; 4]);
}

#[test]
fn grad_cam_at_the_conv_layer() {
    // dS0/dconv1 = fc row, masked by the rectifier: channel 0 = [[0, 1], [1, 1]],
    // channel 1 = [[0, 0], [-1, -1]]; alpha = (3/4, -1/2). Captum's
    // LayerGradCam(net, net.conv1) on the conv output (before the ReLU):
    // 3/4 * [[-5, 4], [31, 40]] - 1/2 * [[-30, -21], [6, 15]] = [[11.25, 13.5],
    // [20.25, 22.5]] (captum tests/attr/layer/test_grad_cam.py, test_simple_input_conv).
    let net = one_conv();
    let m = GradCam::new()
        .layer("conv1")
        .attribute(&net, arange().view(), &Target::Class(0))
        .unwrap();
    assert_close(&m.values, &[11.25, 13.5, 20.25, 22.5], &[1, 2, 2]);
}

#[test]
fn grad_cam_at_the_network_input() {
    // dS0/dx: channel-0 gradient (0, 1, 1, 1 at the four positions) and channel-1
    // (0, 0, -1, -1) spread back through the all-ones 3x3 kernels; its mean over the
    // 16 pixels is (3 * 9 - 2 * 9) / 16 = 9/16 = 0.5625, so Grad-CAM at the input is
    // ReLU(0.5625 * x) = 0.5625 * arange(16) (Captum's LayerGradCam with
    // attribute_to_layer_input=True). A zero map here would be a gradient that was
    // never captured.
    let net = one_conv();
    let m = GradCam::new()
        .layer("input")
        .attribute(&net, arange().view(), &Target::Class(0))
        .unwrap();
    let expected: Vec<f64> = (0..16).map(|i| 0.5625 * i as f64).collect();
    assert_close(&m.values, &expected, &[1, 4, 4]);
    // The tap's gradient is the input gradient itself.
    let (x, target) = (arange(), Target::Class(0));
    let mut req = BackwardRequest::tap(x.view(), &target, "input");
    req.input_grad = true;
    let out = net.backward(&req).unwrap();
    assert_eq!(
        &out.tap("input").unwrap().gradient,
        out.input_gradient().unwrap()
    );
    assert!(net
        .layers()
        .iter()
        .any(|l| l.name == "input" && l.kind == "input"));
}

#[test]
fn occlusion_crops_the_last_window_like_captum() {
    // 3x3 windows at stride 2 on 4x4: ceil((4 - 3) / 2) + 1 = 2 per axis, at 0 and
    // 2, the second cropped to 2 pixels. With the window zeroed, the output drops from
    // 54 to 10, 21, 5, 7 for the windows at (0,0), (0,2), (2,0), (2,2): drops 44, 33,
    // 49, 47; each pixel averages the windows covering it. Captum's Occlusion with
    // sliding_window_shapes=(1, 3, 3), strides=(1, 2, 2) gives exactly this.
    let net = one_conv();
    let occ = Occlusion::new(3, 2)
        .attribute(&net, arange().view(), &Target::Class(0))
        .unwrap();
    assert_close(
        &occ.values,
        &[
            44.0, 44.0, 38.5, 33.0, //
            44.0, 44.0, 38.5, 33.0, //
            49.0, 49.0, 44.5, 40.0, //
            54.0, 54.0, 50.5, 47.0,
        ],
        &[1, 4, 4],
    );
    // A window spanning a whole axis may have any stride there (one position), as
    // in Captum: (4, 2) windows at strides (9, 1) = Captum's (1, 4, 2) / (1, 9, 1).
    let full = Occlusion::new(4, 1)
        .window(4, 2)
        .stride(9, 1)
        .attribute(&net, arange().view(), &Target::Class(0))
        .unwrap();
    let row = [41.0, 47.5, 53.5, 53.0];
    assert_close(&full.values, &row.repeat(4), &[1, 4, 4]);
    // Elsewhere a stride above the window would skip pixels: refused, as Captum
    // refuses it.
    let e = Occlusion::new(2, 3)
        .attribute(&net, arange().view(), &Target::Class(0))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid occlusion stride: 3 rows is larger than the window's 2: pixels between windows would never be occluded (Captum refuses this too)"
    );
}
