//! Every typed error a user can provoke, with the message it prints.

mod common;

use attrib_core::{Attribution, BackwardRequest, Error, Model, Rectifier, Target};
use attrib_dfdx::{Conv2d, Conv2dConfig, Linear, NetworkBuilder};
use attrib_methods::{Cam, GradCam, Gradient, Occlusion, Saliency};
use common::{tiny, tiny_input};
use ndarray::{array, Array4};

#[test]
fn unknown_layer_lists_the_valid_names() {
    let e = GradCam::new()
        .layer("layer9")
        .attribute(&tiny(), tiny_input().view(), &Target::Class(0))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown layer `layer9`; valid layers: conv, relu, gap, flatten, fc"
    );
    let net = tiny();
    let x = tiny_input();
    let mut req = BackwardRequest::tap(x.view(), &Target::Class(0), "conv");
    req.taps.push("nope".into());
    let e = net.backward(&req).unwrap_err();
    assert!(matches!(e, Error::UnknownLayer { ref name, .. } if name == "nope"));
}

#[test]
fn class_out_of_range() {
    let e = Gradient
        .attribute(&tiny(), tiny_input().view(), &Target::Class(2))
        .unwrap_err();
    assert_eq!(
        e,
        Error::ClassOutOfRange {
            class: 2,
            item: 0,
            num_classes: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "class 2 out of range for batch item 0: the model has 2 outputs (valid 0..=1)"
    );
    let x = Array4::from_shape_fn((2, 1, 3, 3), |(_, _, i, j)| (i + j) as f64);
    let e = Cam
        .attribute(&tiny(), x.view(), &Target::PerSample(vec![0, 5]))
        .unwrap_err();
    assert_eq!(
        e,
        Error::ClassOutOfRange {
            class: 5,
            item: 1,
            num_classes: 2
        }
    );
    let e = Occlusion::new(2, 1)
        .attribute(&tiny(), x.view(), &Target::PerSample(vec![0]))
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
}

#[test]
fn empty_batch_and_non_finite_input() {
    let empty = Array4::<f64>::zeros((0, 1, 3, 3));
    for e in [
        Saliency
            .attribute(&tiny(), empty.view(), &Target::Class(0))
            .unwrap_err(),
        GradCam::new()
            .attribute(&tiny(), empty.view(), &Target::Class(0))
            .unwrap_err(),
        Occlusion::new(2, 1)
            .attribute(&tiny(), empty.view(), &Target::Class(0))
            .unwrap_err(),
    ] {
        assert_eq!(e, Error::EmptyBatch);
    }
    let mut x = tiny_input();
    x[[0, 0, 2, 1]] = f64::INFINITY;
    let e = Gradient
        .attribute(&tiny(), x.view(), &Target::Class(0))
        .unwrap_err();
    assert_eq!(e.to_string(), "non-finite input value inf at [0, 0, 2, 1]");
    x[[0, 0, 2, 1]] = f64::NAN;
    let e = tiny().forward(x.view()).unwrap_err();
    assert!(matches!(
        e,
        Error::NonFiniteInput {
            index: [0, 0, 2, 1],
            ..
        }
    ));
}

#[test]
fn shape_mismatches() {
    let x = Array4::<f64>::zeros((1, 3, 3, 3));
    let e = Gradient
        .attribute(&tiny(), x.view(), &Target::Class(0))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "shape mismatch for input (N, C, H, W): expected (N, 1, H, W) with H, W > 0, got (1, 3, 3, 3)"
    );
    // Too small for the 2x2 kernel.
    let x = Array4::<f64>::zeros((1, 1, 1, 3));
    let e = tiny().forward(x.view()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("shape mismatch for conv2d input size"),
        "{e}"
    );
    // A seed of the wrong width.
    let e = Gradient
        .attribute(
            &tiny(),
            tiny_input().view(),
            &Target::Seed(array![[1.0, 0.0, 0.0]]),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "shape mismatch for target seed: expected (1, 2), got (1, 3)"
    );
    // A network whose flatten size depends on the input refuses other sizes.
    let mut b = NetworkBuilder::<f64>::new([1, 2, 2]);
    b.flatten("flatten").unwrap();
    b.linear("fc", Linear::from_vec(vec![1.0; 4], [1, 4], None).unwrap())
        .unwrap();
    let net = b.build().unwrap();
    let e = net.forward(Array4::zeros((1, 1, 3, 3)).view()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "shape mismatch for linear input: expected (N, 4, 1, 1) (flatten or pool before a linear layer), got (1, 9, 1, 1)"
    );
}

#[test]
fn builder_and_weight_errors() {
    let e = Conv2d::<f32>::from_vec(vec![0.0; 7], [2, 1, 2, 2], None, Conv2dConfig::default())
        .unwrap_err();
    assert_eq!(e.to_string(), "shape mismatch for conv2d weight: expected [2, 1, 2, 2] with no zero dimension, got 7 values");
    let e = Linear::<f32>::from_vec(vec![0.0; 6], [2, 3], Some(vec![0.0; 3])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "shape mismatch for linear bias: expected (2,), got (3,)"
    );
    let mut b = NetworkBuilder::<f32>::new([3, 8, 8]);
    let c = Conv2d::from_vec(
        vec![0.0; 2 * 4 * 9],
        [2, 4, 3, 3],
        None,
        Conv2dConfig::default(),
    )
    .unwrap();
    let e = b.conv2d("conv1", c).unwrap_err();
    assert_eq!(
        e.to_string(),
        "shape mismatch for layer `conv1`: conv2d input channels: expected 4 channels (1 groups of 4), got 3 channels"
    );
    b.relu("relu").unwrap();
    assert!(b
        .relu("relu")
        .unwrap_err()
        .to_string()
        .contains("`relu` is empty or already used"));
    let e = b.clone().build().unwrap_err();
    assert!(
        e.to_string()
            .starts_with("shape mismatch for network output"),
        "{e}"
    );
}

#[test]
fn method_specific_errors() {
    // CAM needs a GAP + linear head.
    let mut b = NetworkBuilder::<f64>::new([1, 2, 2]);
    b.relu("relu").unwrap().flatten("flatten").unwrap();
    b.linear("fc", Linear::from_vec(vec![1.0; 4], [1, 4], None).unwrap())
        .unwrap();
    let net = b.build().unwrap();
    let e = Cam
        .attribute(&net, Array4::zeros((1, 1, 2, 2)).view(), &Target::Class(0))
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }));
    assert!(e
        .to_string()
        .starts_with("cam is not applicable: the model does not end in a global-average-pool"));
    // Occlusion windows must fit.
    let e = Occlusion::new(4, 1)
        .attribute(&tiny(), tiny_input().view(), &Target::Class(0))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid occlusion window: 4x4 is larger than the 3x3 input"
    );
    let e = Occlusion::new(2, 0)
        .attribute(&tiny(), tiny_input().view(), &Target::Class(0))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidParameter { .. }));
    // The backward request without the input gradient cannot serve a gradient method.
    let out = tiny()
        .backward(&BackwardRequest {
            input: tiny_input().view(),
            target: &Target::Class(0),
            rectifier: Rectifier::Gradient,
            taps: vec![],
            input_grad: false,
        })
        .unwrap();
    assert!(out.input_gradient().is_err());
}

/// The baselines' parameters and preconditions: each a typed error naming the
/// problem, never a panic or a silent zero.
#[test]
fn baseline_method_errors() {
    use attrib_methods::{
        AblationCam, EigenCam, GradCamPlusPlus, HiResCam, InputXGradient, IntegratedGradients,
        Integration, LayerCam, MultiLayer, NoiseKind, NoiseTunnel, ScoreCam, XGradCam,
    };
    let (net, x) = (tiny(), tiny_input());
    let t = Target::Class(0);
    let msg = |r: attrib_core::Result<attrib_core::AttributionMap<f64>>| r.unwrap_err().to_string();
    // Unknown layers, for every layer method.
    let unknown = "unknown layer `nope`; valid layers: conv, relu, gap, flatten, fc";
    for m in [
        msg(GradCamPlusPlus::new()
            .layer("nope")
            .attribute(&net, x.view(), &t)),
        msg(XGradCam::new().layer("nope").attribute(&net, x.view(), &t)),
        msg(LayerCam::new().layer("nope").attribute(&net, x.view(), &t)),
        msg(HiResCam::new().layer("nope").attribute(&net, x.view(), &t)),
        msg(ScoreCam::new().layer("nope").attribute(&net, x.view(), &t)),
        msg(AblationCam::new()
            .layer("nope")
            .attribute(&net, x.view(), &t)),
        msg(EigenCam::new().layer("nope").attribute(&net, x.view(), &t)),
        msg(
            MultiLayer::new(GradCam::new(), vec!["relu".into(), "nope".into()]).attribute(
                &net,
                x.view(),
                &t,
            ),
        ),
    ] {
        assert_eq!(m, unknown);
    }
    assert_eq!(
        msg(MultiLayer::new(GradCam::new(), vec![]).attribute(&net, x.view(), &t)),
        "invalid layers: give at least one"
    );
    // Integrated gradients.
    assert_eq!(
        msg(IntegratedGradients::new()
            .steps(0)
            .attribute(&net, x.view(), &t)),
        "invalid integration steps: gausslegendre needs at least 1 step, got 0"
    );
    assert_eq!(
        msg(IntegratedGradients::new()
            .method(Integration::RiemannTrapezoid)
            .steps(1)
            .attribute(&net, x.view(), &t)),
        "invalid integration steps: riemann_trapezoid needs at least 2 steps, got 1"
    );
    assert_eq!(
        msg(IntegratedGradients::new()
            .baseline(f64::NAN)
            .attribute(&net, x.view(), &t)),
        "invalid baseline: NaN is not finite"
    );
    assert!(msg(IntegratedGradients::new()
        .max_batch(0)
        .attribute(&net, x.view(), &t))
    .contains("must be positive"));
    assert_eq!(
        msg(IntegratedGradients::new()
            .steps(20_000)
            .attribute(&net, x.view(), &t)),
        "invalid integration steps: 20000 is more than the 10000 supported"
    );
    // A stacked batch that would not fit in memory is refused, not allocated.
    assert_eq!(
        attrib_methods::parts::check_batch_size(1 << 20, 3 * 224 * 224, "noise tunnel batch")
            .unwrap_err()
            .to_string(),
        "invalid noise tunnel batch: 1048576 copies of 150528 values exceed the 268435456 values one pass may hold; use a smaller batch"
    );
    assert!(attrib_methods::parts::check_batch_size(usize::MAX, 2, "x").is_err());
    assert!(attrib_methods::parts::check_batch_size(64, 3 * 224 * 224, "x").is_ok());
    // Noise tunnels.
    let nt = || NoiseTunnel::new(InputXGradient, NoiseKind::SmoothGrad);
    assert_eq!(
        msg(nt().samples(0).attribute(&net, x.view(), &t)),
        "invalid noise samples: must be positive"
    );
    assert_eq!(
        msg(nt().std(-0.5).attribute(&net, x.view(), &t)),
        "invalid noise std: -0.5 is not a finite, non-negative number"
    );
    assert_eq!(
        msg(nt()
            .samples(2)
            .with_noise(Array4::zeros((3, 1, 3, 3)))
            .attribute(&net, x.view(), &t)),
        "shape mismatch for given noise: expected (2, 1, 3, 3), got (3, 1, 3, 3)"
    );
    assert_eq!(
        "smoothgrad-squared".parse::<NoiseKind>().unwrap_err().to_string(),
        "invalid noise tunnel: unknown `smoothgrad-squared`; valid: smoothgrad, smoothgrad-sq, vargrad"
    );
    // Ablation-CAM divides by the explained score: a score of exactly 0 is an error.
    let e = msg(AblationCam::new().attribute(&net, x.view(), &Target::Seed(array![[0.0, 0.0]])));
    assert!(e.contains("the explained score of item 0 is 0"), "{e}");
    // Score-CAM and Ablation-CAM batch sizes.
    assert!(
        msg(ScoreCam::new().max_batch(0).attribute(&net, x.view(), &t))
            .contains("must be positive")
    );
    assert!(msg(AblationCam::new()
        .max_batch(0)
        .attribute(&net, x.view(), &t))
    .contains("must be positive"));
    // NaN in the input: every new method refuses it.
    let mut bad = x.clone();
    bad[[0, 0, 1, 1]] = f64::NAN;
    for e in [
        msg(GradCamPlusPlus::new().attribute(&net, bad.view(), &t)),
        msg(ScoreCam::new().attribute(&net, bad.view(), &t)),
        msg(AblationCam::new().attribute(&net, bad.view(), &t)),
        msg(EigenCam::new().attribute(&net, bad.view(), &t)),
        msg(IntegratedGradients::new().attribute(&net, bad.view(), &t)),
        msg(nt().attribute(&net, bad.view(), &t)),
    ] {
        assert!(e.contains("NaN"), "{e}");
    }
}
