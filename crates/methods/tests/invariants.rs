//! Property tests: identities between methods over random tiny networks and inputs.

mod common;

use attrib_core::{LayerTap, Model, Target};
use attrib_methods::invariants::{self, Check};
use attrib_methods::{
    Deconvnet, GradCam, Gradient, GuidedBackprop, GuidedGradCam, Occlusion, Saliency,
};
use common::{random_net, shapes, Shape};
use ndarray::Array2;
use proptest::prelude::*;

fn ok(c: Check) -> Result<(), TestCaseError> {
    prop_assert!(
        c.holds(1e-10, 1e-12),
        "{}: max diff {:e} at scale {:e}",
        c.name,
        c.max_abs_diff,
        c.scale
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn cam_identities(seed in any::<u64>(), s in shapes(), batch in 1usize..=3, class in 0usize..2) {
        let (net, x) = random_net(seed, s, batch);
        let t = Target::Class(class);
        ok(invariants::grad_cam_is_relu_cam_over_z(&net, x.view(), &t)?)?;
        ok(invariants::cam_mean_is_score_minus_bias(&net, x.view(), &t)?)?;
        ok(invariants::cam_mean_is_score_minus_bias(&net, x.view(), &Target::TopPredicted)?)?;
    }

    #[test]
    fn guided_grad_cam_and_saliency(seed in any::<u64>(), s in shapes(), batch in 1usize..=3) {
        let (net, x) = random_net(seed, s, batch);
        // The default layer has no rectifier above it (one shared guided pass); the
        // first one does when a second convolution follows (two passes).
        for gc in [GradCam::new(), GradCam::new().layer("act1")] {
            ok(invariants::guided_grad_cam_is_product(&net, x.view(), &Target::TopPredicted, &gc)?)?;
        }
        ok(invariants::saliency_is_max_abs_gradient(&net, x.view(), &Target::Class(1))?)?;
    }

    #[test]
    fn batch_equals_items(seed in any::<u64>(), s in shapes(), batch in 2usize..=3) {
        let (net, x) = random_net(seed, s, batch);
        let per: Vec<usize> = (0..batch).map(|i| i % s.classes).collect();
        let t = Target::PerSample(per);
        ok(invariants::batch_equals_items(&Gradient, &net, x.view(), &t)?)?;
        ok(invariants::batch_equals_items(&Saliency, &net, x.view(), &Target::TopPredicted)?)?;
        ok(invariants::batch_equals_items(&GuidedBackprop, &net, x.view(), &t)?)?;
        ok(invariants::batch_equals_items(&Deconvnet, &net, x.view(), &t)?)?;
        ok(invariants::batch_equals_items(&GradCam::new(), &net, x.view(), &t)?)?;
        ok(invariants::batch_equals_items(&GradCam::counterfactual(), &net, x.view(), &t)?)?;
        ok(invariants::batch_equals_items(&GuidedGradCam::new(), &net, x.view(), &t)?)?;
        ok(invariants::batch_equals_items(&Occlusion::new(2, 2).max_batch(3), &net, x.view(), &t)?)?;
        let k = net.num_outputs();
        let seed_rows = Array2::from_shape_fn((batch, k), |(i, j)| (i as f64 + 1.0) * (j as f64 - 0.5));
        ok(invariants::batch_equals_items(&Gradient, &net, x.view(), &Target::Seed(seed_rows))?)?;
    }

    #[test]
    fn one_hot_seed_is_class(seed in any::<u64>(), s in shapes(), batch in 1usize..=2, class in 0usize..2) {
        let (net, x) = random_net(seed, s, batch);
        let k = net.num_outputs();
        ok(invariants::one_hot_seed_is_class(&Gradient, &net, x.view(), class, k)?)?;
        ok(invariants::one_hot_seed_is_class(&GuidedBackprop, &net, x.view(), class, k)?)?;
        ok(invariants::one_hot_seed_is_class(&GradCam::new(), &net, x.view(), class, k)?)?;
        ok(invariants::one_hot_seed_is_class(&Occlusion::new(3, 2), &net, x.view(), class, k)?)?;
    }

    #[test]
    fn deconvnet_ignores_input_without_max_pool(seed in any::<u64>(), s in shapes(), other in any::<u64>()) {
        let s = Shape { max_pool: false, ..s };
        let (net, a) = random_net(seed, s, 2);
        let (_, b) = random_net(other, s, 2);
        let k = net.num_outputs();
        let seed_rows = Array2::from_shape_fn((2, k), |(i, j)| if (i + j) % 2 == 0 { 1.0 } else { -0.5 });
        ok(invariants::deconvnet_ignores_input(&net, a.view(), b.view(), &seed_rows)?)?;
    }

    #[test]
    fn grad_cam_default_layer_is_last_rectified_map(seed in any::<u64>(), s in shapes()) {
        let (net, _) = random_net(seed, s, 1);
        let expected = if s.second_conv { "act2" } else { "act1" };
        prop_assert_eq!(net.default_layer(), expected);
        prop_assert_eq!(net.linear_head().unwrap().layer, if s.second_conv { "act2" } else if s.max_pool { "pool" } else { "act1" });
    }
}

#[test]
fn deconvnet_depends_on_input_through_max_pool_switches() {
    // The converse: with max-pool, the switches make deconvnet input-dependent.
    let s = Shape {
        in_ch: 1,
        size: 6,
        hidden: 2,
        second_conv: false,
        max_pool: true,
        relu6: false,
        classes: 2,
    };
    let (net, a) = random_net(7, s, 1);
    let (_, b) = random_net(8, s, 1);
    let seed = Array2::from_elem((1, 2), 1.0);
    let c = invariants::deconvnet_ignores_input(&net, a.view(), b.view(), &seed).unwrap();
    assert!(c.max_abs_diff > 1e-3, "{c:?}");
}
