//! Property tests for the baseline methods of issue 12 over random tiny networks
//! (`common::random_net`: one or two convolutions, ReLU or ReLU6, optional max-pool,
//! GAP + linear head) and inputs: the identities of `attrib_methods::invariants`,
//! batch = items for every method, one-hot seed = class, and running the trunk once
//! (`LayerTap::forward_from`) giving the full forward's scores.

mod common;

use attrib_core::{Attribution, LayerTap, Model, Target};
use attrib_dfdx::{Arch, Network};
use attrib_methods::invariants::{self, Check};
use attrib_methods::{
    AblationCam, EigenCam, GradCam, GradCamPlusPlus, Gradient, GuidedBackprop, HiResCam,
    InputXGradient, IntegratedGradients, Integration, LayerCam, MultiLayer, NoiseKind, NoiseTunnel,
    Saliency, ScoreCam, XGradCam,
};
use common::{random_net, shapes, Shape};
use ndarray::Array4;
use proptest::prelude::*;

fn ok(c: Check, rtol: f64, atol: f64) -> Result<(), TestCaseError> {
    prop_assert!(
        c.holds(rtol, atol),
        "{}: max diff {:e} at scale {:e}",
        c.name,
        c.max_abs_diff,
        c.scale
    );
    Ok(())
}

type Method = Box<dyn Attribution<f64, Network<f64>>>;

/// Every new method, with small batches where it has them (so chunking is exercised).
fn methods() -> Vec<Method> {
    vec![
        Box::new(GradCamPlusPlus::new()),
        Box::new(XGradCam::new()),
        Box::new(LayerCam::new()),
        Box::new(HiResCam::new()),
        Box::new(ScoreCam::new().max_batch(3)),
        Box::new(AblationCam::new().max_batch(3)),
        Box::new(EigenCam::new()),
        Box::new(IntegratedGradients::new().steps(5).max_batch(4)),
        Box::new(InputXGradient),
        Box::new(
            NoiseTunnel::new(Gradient, NoiseKind::SmoothGrad)
                .samples(3)
                .std(0.1)
                .max_batch(2),
        ),
        Box::new(GradCam::new().per_channel()),
        Box::new(MultiLayer::new(
            GradCam::new(),
            vec!["conv1".into(), "act1".into()],
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn integrated_gradients_are_complete(seed in any::<u64>(), s in shapes(), batch in 1usize..=2, base in -0.5f64..0.5) {
        let (net, x) = random_net(seed, s, batch);
        // Piecewise-linear paths: a fine trapezoid rule leaves an error of order
        // (kinks on the path) / steps^2 of the score's range; Gauss-Legendre at
        // Captum's 50 points one of order 1 / 50.
        let fine = IntegratedGradients::new().method(Integration::RiemannTrapezoid).steps(2000).baseline(base);
        let scores = net.forward(x.view()).unwrap();
        let range = scores.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1.0);
        // Captum's trapezoid weights sum to 1 - 1/n: the last 1/n of the path is left
        // out, an error of |dS| / n.
        let c = invariants::integrated_gradients_completeness(&fine, &net, x.view(), &Target::TopPredicted)?;
        ok(c, 0.0, 2e-3 * range)?;
        // (Gauss-Legendre at 50 points has no such bound on these piecewise-linear
        // paths: its gap is measured by the property kit, and exact where the path is
        // linear, as on the hand-computed network.)
    }

    #[test]
    fn hires_and_xgrad_are_grad_cam_under_gap(seed in any::<u64>(), s in shapes(), batch in 1usize..=3, class in 0usize..2) {
        let (net, x) = random_net(seed, s, batch);
        for t in [Target::Class(class), Target::TopPredicted] {
            let [hr, xg] = invariants::hires_and_xgrad_are_grad_cam_under_gap(&net, x.view(), &t)?;
            ok(hr, 1e-12, 1e-14)?;
            // XGrad-CAM's weights are alpha_k S_k / (S_k + 1e-7), S_k the channel's sum:
            // as the activations are rectified (A_ij <= S_k), the maps differ by at most
            // 1e-7 sum_k |alpha_k| per item.
            let layer = net.linear_head().unwrap().layer;
            let out = net.backward(&attrib_core::BackwardRequest::tap(x.view(), &t, &layer))?;
            let g = &out.taps[0].gradient;
            let (n, _, h, w) = g.dim();
            let bound = (0..n)
                .map(|b| {
                    g.index_axis(ndarray::Axis(0), b)
                        .outer_iter()
                        .map(|ch| (ch.sum() / (h * w) as f64).abs())
                        .sum::<f64>()
                })
                .fold(0.0f64, f64::max);
            ok(xg, 1e-12, 1e-7 * bound * (1.0 + 1e-9) + 1e-14)?;
        }
    }

    #[test]
    fn noise_tunnel_without_noise_is_the_inner_method(seed in any::<u64>(), s in shapes(), batch in 1usize..=2) {
        let (net, x) = random_net(seed, s, batch);
        let t = Target::TopPredicted;
        for c in invariants::noise_tunnel_without_noise_is_inner(&Gradient, &net, x.view(), &t)? {
            ok(c, 1e-12, 1e-14)?;
        }
        for c in invariants::noise_tunnel_without_noise_is_inner(&Saliency, &net, x.view(), &t)? {
            ok(c, 1e-12, 1e-14)?;
        }
        for c in invariants::noise_tunnel_without_noise_is_inner(&GuidedBackprop, &net, x.view(), &t)? {
            ok(c, 1e-12, 1e-14)?;
        }
        let ig = IntegratedGradients::new().steps(4);
        for c in invariants::noise_tunnel_without_noise_is_inner(&ig, &net, x.view(), &t)? {
            ok(c, 1e-12, 1e-14)?;
        }
    }

    #[test]
    fn per_channel_grad_cam_sums_to_grad_cam(seed in any::<u64>(), s in shapes(), batch in 1usize..=3) {
        let (net, x) = random_net(seed, s, batch);
        for gc in [GradCam::new(), GradCam::new().layer("conv1"), GradCam::counterfactual()] {
            let c = invariants::per_channel_sums_to_grad_cam(&gc, &net, x.view(), &Target::TopPredicted)?;
            ok(c, 1e-12, 1e-14)?;
        }
    }

    #[test]
    fn batch_equals_items(seed in any::<u64>(), s in shapes(), batch in 2usize..=3) {
        let (net, x) = random_net(seed, s, batch);
        let per = Target::PerSample((0..batch).map(|i| (i + 1) % s.classes).collect());
        for m in methods() {
            for t in [&per, &Target::TopPredicted] {
                let c = invariants::batch_equals_items(m.as_ref(), &net, x.view(), t)?;
                // Noise is drawn per call, for the rows of that call: a batch and its
                // items draw differently. Its own check is below.
                if m.name() == "smoothgrad" {
                    continue;
                }
                prop_assert!(c.holds(1e-10, 1e-12), "{}: {c:?}", m.name());
            }
        }
    }

    #[test]
    fn one_hot_seed_is_class(seed in any::<u64>(), s in shapes(), batch in 1usize..=2, class in 0usize..2) {
        let (net, x) = random_net(seed, s, batch);
        let k = net.num_outputs();
        for m in methods() {
            let c = invariants::one_hot_seed_is_class(m.as_ref(), &net, x.view(), class, k)?;
            prop_assert!(c.holds(1e-10, 1e-12), "{}: {c:?}", m.name());
        }
    }

    #[test]
    fn noise_tunnel_is_deterministic_per_seed_and_chunking(seed in any::<u64>(), s in shapes(), noise_seed in any::<u64>()) {
        let (net, x) = random_net(seed, s, 2);
        let t = Target::TopPredicted;
        let tunnel = |mb: usize, k: u64| NoiseTunnel::new(InputXGradient, NoiseKind::VarGrad)
            .samples(4).std(0.2).seed(k).max_batch(mb)
            .attribute(&net, x.view(), &t).unwrap().values;
        let a = tunnel(32, noise_seed);
        prop_assert_eq!(&a, &tunnel(32, noise_seed));
        let c = invariants::compare("chunked", &tunnel(3, noise_seed), &a)?;
        ok(c, 1e-12, 1e-14)?;
        // Another seed, other noise (unless the network is dead there: all maps 0).
        if a.iter().any(|v| *v != 0.0) {
            prop_assert_ne!(&a, &tunnel(32, noise_seed ^ 1));
        }
    }

    #[test]
    fn forward_from_the_layers_own_activations_is_the_forward(seed in any::<u64>(), s in shapes(), batch in 1usize..=3) {
        let (net, x) = random_net(seed, s, batch);
        forward_from_every_layer(&net, x.view())?;
    }
}

/// Running from any layer's own activations (for any item order) gives the rows of
/// the full forward pass.
fn forward_from_every_layer(
    net: &Network<f64>,
    x: ndarray::ArrayView4<f64>,
) -> Result<(), TestCaseError> {
    let full = net.forward(x).unwrap();
    let n = x.dim().0;
    let items: Vec<usize> = (0..n).rev().chain(0..n).collect();
    for layer in net.layers().into_iter().map(|l| l.name) {
        let Ok((_, acts)) = net.activations(x, std::slice::from_ref(&layer)) else {
            continue;
        };
        let a = &acts[0];
        let rows = Array4::from_shape_fn(
            (items.len(), a.dim().1, a.dim().2, a.dim().3),
            |(r, c, i, j)| a[[items[r], c, i, j]],
        );
        let out = net.forward_from(x, &layer, rows.view(), &items);
        let out = match out {
            Ok(o) => o,
            Err(e) => return Err(TestCaseError::fail(format!("{layer}: {e}"))),
        };
        for (r, &b) in items.iter().enumerate() {
            for k in 0..full.dim().1 {
                let (g, e) = (out[[r, k]], full[[b, k]]);
                prop_assert!(
                    (g - e).abs() <= 1e-12 * e.abs().max(1.0),
                    "{layer} row {r}: {g} vs {e}"
                );
            }
        }
    }
    Ok(())
}

/// ResNet's residual branches: the trunk below a layer inside a block still feeds the
/// skip connection.
#[test]
fn forward_from_inside_resnet_blocks() {
    let net = Arch::Resnet18.synthetic::<f64>(3, 5).unwrap();
    let x = Array4::from_shape_fn((2, 3, 32, 32), |(b, c, i, j)| {
        ((b * 7 + c * 3 + i * 5 + j) % 11) as f64 / 11.0 - 0.5
    });
    forward_from_every_layer(&net, x.view()).unwrap();
}

/// A model that records the target of every backward pass it runs.
struct Spy<'a> {
    net: &'a Network<f64>,
    seen: std::sync::Mutex<Vec<Target<f64>>>,
}

impl attrib_core::Model<f64> for Spy<'_> {
    fn input_shape(&self) -> [usize; 3] {
        self.net.input_shape()
    }

    fn num_outputs(&self) -> usize {
        self.net.num_outputs()
    }

    fn forward(
        &self,
        input: ndarray::ArrayView4<f64>,
    ) -> attrib_core::Result<ndarray::Array2<f64>> {
        self.net.forward(input)
    }

    fn backward(
        &self,
        req: &attrib_core::BackwardRequest<'_, f64>,
    ) -> attrib_core::Result<attrib_core::BackwardOutput<f64>> {
        self.seen.lock().unwrap().push(req.target.clone());
        self.net.backward(req)
    }
}

/// Integrated gradients and SmoothGrad explain the class predicted at the input at
/// every path point and every noisy sample, even where another class is on top
/// there: each backward pass gets the pinned classes, never "the top prediction".
#[test]
fn multi_pass_methods_explain_the_same_class_at_every_step() {
    // A network and input whose top class at the baseline (0) differs from the
    // input's, so an unpinned target would switch classes along the path.
    let s = Shape {
        in_ch: 2,
        size: 5,
        hidden: 3,
        second_conv: true,
        max_pool: false,
        relu6: false,
        classes: 4,
    };
    let (net, x, top) = (0u64..)
        .find_map(|seed| {
            let (net, x) = random_net(seed, s, 1);
            let top = |x: &Array4<f64>| -> Vec<Option<usize>> {
                let scores = net.forward(x.view()).unwrap();
                Target::<f64>::TopPredicted
                    .resolve(scores.view())
                    .unwrap()
                    .classes
            };
            let (at_x, at_zero) = (top(&x), top(&x.mapv(|v| v * 0.01)));
            (at_x != at_zero).then_some((net, x, at_x))
        })
        .unwrap();
    type OnSpy<'a> = Box<dyn Attribution<f64, Spy<'a>>>;
    let methods: Vec<(&str, OnSpy)> = vec![
        (
            "integrated-gradients",
            Box::new(IntegratedGradients::new().steps(16).max_batch(5)),
        ),
        (
            "smoothgrad",
            Box::new(
                NoiseTunnel::new(Gradient, NoiseKind::SmoothGrad)
                    .samples(6)
                    .std(0.5)
                    .max_batch(4),
            ),
        ),
    ];
    for (name, m) in methods {
        let spy = Spy {
            net: &net,
            seen: Default::default(),
        };
        let map = m.attribute(&spy, x.view(), &Target::TopPredicted).unwrap();
        assert_eq!(map.classes, top, "{name}");
        let seen = spy.seen.into_inner().unwrap();
        assert!(seen.len() > 1, "{name}: {} passes", seen.len());
        for t in &seen {
            assert!(
                !matches!(t, Target::TopPredicted),
                "{name}: an unpinned pass"
            );
            // Whatever the scores at that step, the pass explains the input's class.
            let rows = match t {
                Target::PerSample(v) => v.clone(),
                other => panic!("{name}: {other:?}"),
            };
            for (r, c) in rows.iter().enumerate() {
                assert_eq!(Some(*c), top[0], "{name}: row {r}");
            }
        }
    }
}
