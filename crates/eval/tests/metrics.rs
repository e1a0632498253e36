//! The metrics on hand-built cases with known answers, against their references
//! (`tools/reference/eval_fixtures.py`: TorchRay's pointing game, SciPy's Spearman,
//! scikit-image's connected segments), and their invariants.

use std::path::{Path, PathBuf};

use attrib_eval::localisation::{localisation_error, segment_box, Prediction, GRAD_CAM_THRESHOLD};
use attrib_eval::pointing::{hits, is_difficult, map_point, PointingGame, TORCHRAY_TOLERANCE};
use attrib_eval::rank::{pearson, ranks, spearman};
use attrib_eval::PixelBox;
use ndarray::{array, Array2};
use proptest::prelude::*;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/eval")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn bx(v: &Value) -> PixelBox {
    let c = |i: usize| v[i].as_u64().unwrap() as usize;
    PixelBox::new(c(0), c(1), c(2), c(3)).unwrap()
}

fn map_of(v: &Value) -> Array2<f32> {
    map64(v).mapv(|x| x as f32)
}

/// A JSON matrix in f64 (the fixtures' three-decimal values are exact as read here,
/// not in f32).
fn map64(v: &Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    Array2::from_shape_fn((rows.len(), rows[0].len()), |(y, x)| rows[y][x])
}

#[test]
fn boxes_by_hand() {
    let a = PixelBox::new(0, 0, 9, 9).unwrap();
    let b = PixelBox::new(5, 0, 14, 9).unwrap();
    assert_eq!(a.area(), 100);
    // 50 shared of 150.
    assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(a.iou(&a), 1.0);
    assert_eq!(a.iou(&PixelBox::new(10, 10, 12, 12).unwrap()), 0.0);
    assert!(PixelBox::new(3, 0, 2, 0).is_err());
}

#[test]
fn segments_by_hand() {
    // Two segments above 15% of the maximum (1.0): a 3-pixel diagonal (8-connected)
    // and a 2-pixel one holding the maximum; the larger wins.
    let m = array![
        [0.5f32, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.5, 0.0, 0.1, 0.0],
        [0.0, 0.0, 0.5, 0.0, 1.0],
        [0.0, 0.0, 0.0, 0.0, 0.9],
    ];
    let b = segment_box(m.view(), GRAD_CAM_THRESHOLD).unwrap().unwrap();
    assert_eq!(b, PixelBox::new(0, 0, 2, 2).unwrap());
    // At 60% only the maximum's segment is left.
    let b = segment_box(m.view(), 0.6).unwrap().unwrap();
    assert_eq!(b, PixelBox::new(4, 2, 4, 3).unwrap());
    // A value equal to the threshold is not above it.
    let m = array![[1.0f32, 0.5, 0.5, 1.0, 1.0]];
    assert_eq!(
        segment_box(m.view(), 0.5).unwrap().unwrap(),
        PixelBox::new(3, 0, 4, 0).unwrap()
    );
    // Equal sizes: the first in raster order.
    let m = array![[1.0f32, 0.0, 1.0]];
    assert_eq!(
        segment_box(m.view(), 0.5).unwrap().unwrap(),
        PixelBox::new(0, 0, 0, 0).unwrap()
    );
    // Nothing positive: no box; NaN and a bad fraction: errors.
    assert_eq!(
        segment_box(Array2::<f32>::zeros((3, 3)).view(), 0.15).unwrap(),
        None
    );
    assert!(segment_box(array![[0.0f32, f32::NAN]].view(), 0.15).is_err());
    assert!(segment_box(m.view(), 1.5).is_err());
}

#[test]
fn segments_match_scikit_image() {
    for (i, c) in fixture("segments").as_array().unwrap().iter().enumerate() {
        let m = map_of(&c["map"]);
        let got = segment_box(m.view(), c["fraction"].as_f64().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(got, bx(&c["box"]), "case {i}");
    }
}

#[test]
fn localisation_error_by_hand() {
    let gt = [
        PixelBox::new(10, 10, 29, 29).unwrap(),
        PixelBox::new(50, 50, 59, 59).unwrap(),
    ];
    let good = Some(PixelBox::new(12, 12, 31, 31).unwrap()); // IoU 324/476 = 0.68
    let poor = Some(PixelBox::new(20, 20, 39, 39).unwrap()); // IoU 100/700
    let p = |class, bbox| Prediction { class, bbox };
    // Right class, right box: no error; right class, poor box: error.
    assert!(!localisation_error(&[p(3, good)], 1, 3, &gt).unwrap());
    assert!(localisation_error(&[p(3, poor)], 1, 3, &gt).unwrap());
    // Any ground-truth box of the class counts.
    let second = Some(PixelBox::new(50, 50, 58, 59).unwrap());
    assert!(!localisation_error(&[p(3, second)], 1, 3, &gt).unwrap());
    // Wrong class first: top-1 error, top-5 fine when the class comes later.
    let preds = [p(1, good), p(2, None), p(3, good), p(4, poor), p(5, good)];
    assert!(localisation_error(&preds, 1, 3, &gt).unwrap());
    assert!(!localisation_error(&preds, 5, 3, &gt).unwrap());
    // No segment never counts as found.
    assert!(localisation_error(&[p(3, None)], 1, 3, &gt).unwrap());
    assert!(localisation_error(&preds, 6, 3, &gt).is_err());
    assert!(localisation_error(&preds, 1, 3, &[]).is_err());
}

#[test]
fn pointing_by_hand() {
    let b = [PixelBox::new(30, 10, 39, 19).unwrap()];
    // 15 pixels right of the box's last column: TorchRay's strict `<` misses.
    assert!(!hits((54, 12), &b, 50, 60, TORCHRAY_TOLERANCE));
    assert!(hits((53, 12), &b, 50, 60, TORCHRAY_TOLERANCE));
    // Tolerance 0 accepts nothing (a distance is never below 0), as in TorchRay.
    assert!(!hits((35, 15), &b, 50, 60, 0.0));
    assert!(hits((35, 15), &b, 50, 60, 0.5));
    // A corner: distance sqrt(10^2 + 10^2) = 14.1 < 15.
    assert!(hits((49, 29), &b, 50, 60, 15.0));
    // The maximum of a map at the image's size is its own argmax.
    let m = array![[0.0f32, 1.0], [3.0, 2.0]];
    assert_eq!(map_point(m.view(), 2, 2).unwrap(), (0, 1));
    assert!(map_point(array![[f32::INFINITY]].view(), 4, 4).is_err());
    let mut g = PointingGame::new(3, 15.0).unwrap();
    assert_eq!(
        g.play(0, m.view(), &[PixelBox::new(0, 1, 0, 1).unwrap()], 2, 2)
            .unwrap(),
        Some(true)
    );
    assert_eq!(g.play(1, m.view(), &[], 2, 2).unwrap(), None);
    g.record(1, false).unwrap();
    g.record(1, true).unwrap();
    assert!(g.play(3, m.view(), &b, 2, 2).is_err());
    // Class 0: 1/1, class 1: 1/2, class 2: never played, 0.
    assert_eq!(g.class_accuracies(), vec![1.0, 0.5, 0.0]);
    assert!((g.accuracy() - 0.5).abs() < 1e-12);
    assert!((g.hit_rate() - 2.0 / 3.0).abs() < 1e-12);
    assert!(PointingGame::new(2, -1.0).is_err());
    // Difficult: under a quarter of the image and another class present.
    let small = [PixelBox::new(0, 0, 9, 9).unwrap()];
    assert!(is_difficult(&small, 40, 40, true));
    assert!(!is_difficult(&small, 40, 40, false));
    assert!(!is_difficult(
        &[PixelBox::new(0, 0, 19, 19).unwrap()],
        40,
        40,
        true
    ));
}

#[test]
fn pointing_matches_torchray() {
    let f = fixture("pointing");
    for (i, c) in f["hits"].as_array().unwrap().iter().enumerate() {
        let boxes: Vec<PixelBox> = c["boxes"].as_array().unwrap().iter().map(bx).collect();
        let p = (
            c["point"][0].as_u64().unwrap() as usize,
            c["point"][1].as_u64().unwrap() as usize,
        );
        let (h, w) = (
            c["height"].as_u64().unwrap() as usize,
            c["width"].as_u64().unwrap() as usize,
        );
        let got = hits(p, &boxes, h, w, c["tolerance"].as_f64().unwrap());
        assert_eq!(got, c["hit"].as_bool().unwrap(), "case {i}: {c}");
    }
    for (i, c) in f["maps"].as_array().unwrap().iter().enumerate() {
        let m = map_of(&c["map"]);
        let (h, w) = (
            c["height"].as_u64().unwrap() as usize,
            c["width"].as_u64().unwrap() as usize,
        );
        let (x, y) = map_point(m.view(), h, w).unwrap();
        let want = (
            c["point"][0].as_u64().unwrap() as usize,
            c["point"][1].as_u64().unwrap() as usize,
        );
        if (x, y) != want {
            // Upsampling clamps at the borders and repeats values: where maxima tie
            // (up to rounding), PyTorch's point must be one of ours.
            let up = attrib_core::resample::resize_bilinear(
                m.view().insert_axis(ndarray::Axis(0)),
                h,
                w,
            );
            let (ours, theirs) = (up[[0, y, x]], up[[0, want.1, want.0]]);
            assert!(
                (ours - theirs).abs() <= 1e-6 * ours.abs().max(1.0),
                "map {i}: {ours} at {:?}, {theirs} at {want:?}",
                (x, y)
            );
        }
    }
    let g = &f["game"];
    let mut game = PointingGame::new(g["classes"].as_u64().unwrap() as usize, 15.0).unwrap();
    for o in g["outcomes"].as_array().unwrap() {
        game.record(o[0].as_u64().unwrap() as usize, o[1].as_bool().unwrap())
            .unwrap();
    }
    let want: Vec<f64> = g["class_accuracies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (a, b) in game.class_accuracies().iter().zip(&want) {
        assert!((a - b).abs() < 1e-12);
    }
    assert!((game.accuracy() - g["accuracy"].as_f64().unwrap()).abs() < 1e-12);
}

#[test]
fn spearman_by_hand_and_against_scipy() {
    assert_eq!(ranks(&[10.0, 30.0, 20.0, 20.0]), vec![1.0, 4.0, 2.5, 2.5]);
    assert!((spearman(&[1.0, 2.0, 3.0], &[30.0, 20.0, 10.0]).unwrap() + 1.0).abs() < 1e-12);
    // Monotone but not linear: rank correlation 1, Pearson below.
    let (a, b) = ([1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 100.0]);
    assert!((spearman(&a, &b).unwrap() - 1.0).abs() < 1e-12);
    assert!(pearson(&a, &b).unwrap() < 0.9);
    // Undefined cases are errors, not numbers.
    assert!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_err());
    use attrib_eval::rank::spearman_defined;
    assert_eq!(
        spearman_defined(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).unwrap(),
        None
    );
    assert!(
        (spearman_defined(&[1.0, 2.0, 5.0], &[2.0, 4.0, 9.0])
            .unwrap()
            .unwrap()
            - 1.0)
            .abs()
            < 1e-12
    );
    assert!(spearman_defined(&[1.0, 1.0], &[f64::NAN, 1.0]).is_err());
    assert!(spearman_defined(&[1.0, 1.0], &[1.0]).is_err());
    assert!(spearman(&[1.0], &[1.0]).is_err());
    assert!(spearman(&[1.0, 2.0], &[1.0]).is_err());
    assert!(spearman(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
    for (i, c) in fixture("spearman").as_array().unwrap().iter().enumerate() {
        let v = |k: &str| -> Vec<f64> {
            c[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let got = spearman(&v("a"), &v("b")).unwrap();
        let want = c["rho"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "case {i}: {got} vs {want}");
    }
}

proptest! {
    /// Spearman is symmetric, in [-1, 1], and unchanged by a monotone transform of
    /// either side.
    #[test]
    fn spearman_invariants(v in prop::collection::vec((-100i32..100, -100i32..100), 3..40)) {
        let a: Vec<f64> = v.iter().map(|p| p.0 as f64).collect();
        let b: Vec<f64> = v.iter().map(|p| p.1 as f64).collect();
        if let Ok(r) = spearman(&a, &b) {
            prop_assert!((-1.0..=1.0).contains(&r));
            prop_assert!((spearman(&b, &a).unwrap() - r).abs() < 1e-12);
            let cubed: Vec<f64> = a.iter().map(|x| x * x * x + 5.0).collect();
            prop_assert!((spearman(&cubed, &b).unwrap() - r).abs() < 1e-12);
        }
    }

    /// The segment's box lies in the map, and a map with a positive maximum always
    /// has one (the maximum is above any fraction below 1 of itself).
    #[test]
    fn segment_box_lies_in_the_map(h in 1usize..12, w in 1usize..12, seed in 0u64..1000, frac in 0.0f64..1.0) {
        let m = Array2::from_shape_fn((h, w), |(y, x)| (((y * 31 + x * 17) as u64 * (seed + 7)) % 101) as f32);
        let max = m.iter().fold(0.0f32, |a, &v| a.max(v));
        match segment_box(m.view(), frac).unwrap() {
            Some(b) => prop_assert!(b.x1 < w && b.y1 < h && max > 0.0),
            None => prop_assert!(max <= 0.0),
        }
    }
}

#[test]
fn deletion_and_insertion_match_rise() {
    use attrib_dfdx::Arch;
    use attrib_eval::curves::{gaussian_kernel, CausalMetric, Game, Substrate};
    let f = fixture("causal");
    // The blur kernel: SciPy's gaussian_filter of an impulse, reflections included.
    let k = gaussian_kernel(11, 5.0).unwrap();
    let want = map_of(&f["kernel"]);
    for (a, b) in k.iter().zip(want.iter()) {
        assert!((a - *b as f64).abs() < 1e-7, "kernel {a} vs {b}");
    }
    assert!((k.sum() - 1.0).abs() < 1e-12);
    let net = Arch::Resnet18.synthetic::<f32>(4, 10).unwrap();
    let planes: Vec<Array2<f32>> = f["input"].as_array().unwrap().iter().map(map_of).collect();
    let views: Vec<_> = planes.iter().map(|p| p.view()).collect();
    let image = ndarray::stack(ndarray::Axis(0), &views).unwrap();
    let map = map_of(&f["map"]);
    let class = f["class"].as_u64().unwrap() as usize;
    for c in f["curves"].as_array().unwrap() {
        let game = if c["game"] == "del" {
            Game::Deletion
        } else {
            Game::Insertion
        };
        let substrate = match c["substrate"].as_str().unwrap() {
            "zero" => Substrate::Zero,
            "blur" => Substrate::RISE_BLUR,
            _ => Substrate::Mean,
        };
        // A batch that does not divide the 33 points.
        let metric = CausalMetric {
            game,
            substrate,
            step: 32,
            batch: 5,
        };
        let curve = metric.run(&net, image.view(), map.view(), class).unwrap();
        let want: Vec<f64> = c["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(curve.scores.len(), want.len());
        for (i, (a, b)) in curve.scores.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-5, "{c:?} point {i}: {a} vs {b}");
        }
        assert!((curve.auc - c["auc"].as_f64().unwrap()).abs() < 1e-5);
    }
    // Errors: a map of the wrong size, a class beyond the outputs, a zero step, NaN.
    let m = CausalMetric::deletion(32);
    assert!(m
        .run(&net, image.view(), Array2::zeros((4, 4)).view(), class)
        .is_err());
    assert!(m.run(&net, image.view(), map.view(), 10).is_err());
    assert!(CausalMetric { step: 0, ..m }
        .run(&net, image.view(), map.view(), 0)
        .is_err());
    let mut bad = map.clone();
    bad[[3, 3]] = f32::NAN;
    assert!(m.run(&net, image.view(), bad.view(), 0).is_err());
}

#[test]
fn curves_by_hand() {
    use attrib_eval::curves::{auc, salient_order};
    // Trapezoids over [0, 1]: (1 + 0.5) / 2 * 0.5 + (0.5 + 0) / 2 * 0.5.
    assert!((auc(&[1.0, 0.5, 0.0]).unwrap() - 0.5).abs() < 1e-12);
    assert!(auc(&[1.0]).is_err());
    // Decreasing, equal values in decreasing index order.
    assert_eq!(
        salient_order(array![[0.1f32, 0.9], [0.1, 0.5]].view()).unwrap(),
        vec![1, 3, 2, 0]
    );
}

#[test]
fn ssim_matches_scikit_image() {
    use attrib_eval::similarity::ssim;
    for (i, c) in fixture("ssim").as_array().unwrap().iter().enumerate() {
        let rows = |k: &str| map64(&c[k]);
        let got = ssim(
            rows("a").view(),
            rows("b").view(),
            c["data_range"].as_f64().unwrap(),
        )
        .unwrap();
        let want = c["ssim"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "case {i}: {got} vs {want}");
    }
    // A map with itself: 1. Errors: sizes, a window larger than the map, a bad range.
    let a = Array2::from_shape_fn((9, 11), |(y, x)| ((y * 7 + x * 3) % 5) as f64 / 4.0);
    assert!((ssim(a.view(), a.view(), 1.0).unwrap() - 1.0).abs() < 1e-12);
    let z = Array2::<f64>::zeros((8, 8));
    assert!(ssim(z.view(), Array2::<f64>::zeros((8, 9)).view(), 1.0).is_err());
    assert!(ssim(
        Array2::<f64>::zeros((6, 8)).view(),
        Array2::<f64>::zeros((6, 8)).view(),
        1.0
    )
    .is_err());
    assert!(ssim(z.view(), z.view(), 0.0).is_err());
}

#[test]
fn sanity_checks_step_through_the_layers() {
    use attrib_core::{Attribution, Target};
    use attrib_dfdx::weights::randomised;
    use attrib_dfdx::Arch;
    use attrib_eval::sanity::{sanity_check, Randomisation};
    use std::cell::RefCell;
    let layers: Vec<String> = ["fc", "layer4", "layer3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // A build that ignores the randomisation: every step is the original map.
    let asked = RefCell::new(Vec::new());
    let same = Array2::from_shape_fn((24, 24), |(y, x)| ((y * 5 + x * 3) % 7) as f64);
    for how in [Randomisation::Cascading, Randomisation::Independent] {
        asked.borrow_mut().clear();
        let steps = sanity_check(
            &layers,
            how,
            |names: &[String]| {
                asked.borrow_mut().push(names.to_vec());
                Ok(())
            },
            |_: &()| Ok(same.clone()),
        )
        .unwrap();
        for s in &steps {
            assert!((s.spearman.unwrap() - 1.0).abs() < 1e-12);
            assert!((s.spearman_abs.unwrap() - 1.0).abs() < 1e-12);
            assert!((s.ssim.unwrap() - 1.0).abs() < 1e-12);
            assert!((s.hog.unwrap() - 1.0).abs() < 1e-12);
        }
        let want: Vec<Vec<&str>> = match how {
            Randomisation::Cascading => vec![
                vec![],
                vec!["fc"],
                vec!["fc", "layer4"],
                vec!["fc", "layer4", "layer3"],
            ],
            Randomisation::Independent => vec![vec![], vec!["fc"], vec!["layer4"], vec!["layer3"]],
        };
        assert_eq!(*asked.borrow(), want);
    }
    // A real model: re-drawing layers of ResNet-18 changes the gradient's map.
    let weights = Arch::Resnet18.synthetic_weights(2, 10).unwrap();
    let redrawn = randomised(&weights, &layers[..1], 9).unwrap();
    for (k, t) in weights.iter() {
        let changed = redrawn.get(k).unwrap() != t;
        assert_eq!(changed, k.starts_with("fc."), "{k}");
    }
    let kept = randomised(&weights, &["layer4".to_string()], 9).unwrap();
    assert_eq!(
        kept.get("layer4.0.bn1.running_var"),
        weights.get("layer4.0.bn1.running_var")
    );
    assert_ne!(
        kept.get("layer4.0.bn1.weight"),
        weights.get("layer4.0.bn1.weight")
    );
    assert!(randomised(&weights, &["layer9".to_string()], 9).is_err());
    let x = ndarray::Array4::from_shape_fn((1, 3, 32, 32), |(_, c, y, x)| {
        ((c * 11 + y * 3 + x * 7) % 13) as f32 / 6.0 - 1.0
    });
    let steps = sanity_check(
        &layers,
        Randomisation::Cascading,
        |names: &[String]| Arch::Resnet18.from_weights::<f32>(randomised(&weights, names, 9)?),
        |net| {
            let g = attrib_methods::Saliency.attribute(net, x.view(), &Target::Class(3))?;
            Ok(g.values
                .into_dimensionality::<ndarray::Ix3>()
                .unwrap()
                .index_axis_move(ndarray::Axis(0), 0)
                .mapv(f64::from))
        },
    )
    .unwrap();
    assert_eq!(steps.len(), 3);
    for s in &steps {
        assert!(s.spearman.unwrap() < 0.999, "{s:?}");
    }
}

#[test]
fn hog_matches_scikit_image() {
    use attrib_eval::similarity::hog;
    for (i, c) in fixture("hog").as_array().unwrap().iter().enumerate() {
        let m = map64(&c["map"]);
        let n = |k: &str| c[k].as_u64().unwrap() as usize;
        let got = hog(m.view(), n("orientations"), n("cell"), n("block")).unwrap();
        let want: Vec<f64> = c["hog"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "case {i}");
        let worst = got
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst < 1e-6,
            "case {i} ({} px cells, {} blocks): {worst:e}",
            n("cell"),
            n("block")
        );
    }
    assert!(hog(Array2::<f64>::zeros((10, 10)).view(), 9, 8, 3).is_err());
    assert!(hog(Array2::<f64>::zeros((10, 10)).view(), 0, 2, 1).is_err());
}

#[test]
fn bootstrap_intervals() {
    use attrib_eval::summary::bootstrap;
    // A constant: the interval is the point.
    let c = bootstrap(&[0.7; 20], 500, 1).unwrap();
    for v in [c.mean, c.low, c.high] {
        assert!((v - 0.7).abs() < 1e-12);
    }
    assert_eq!(c.n, 20);
    // Hits and misses: the interval holds the mean, is deterministic for a seed, and
    // is close to the normal approximation's for a proportion (0.6 +- 1.96 sqrt(0.24 / 200)).
    let v: Vec<f64> = (0..200)
        .map(|i| if i % 5 < 3 { 1.0 } else { 0.0 })
        .collect();
    let a = bootstrap(&v, 2000, 7).unwrap();
    assert!((a.mean - 0.6).abs() < 1e-12 && a.low < a.mean && a.mean < a.high);
    let half = 1.96 * (0.24f64 / 200.0).sqrt();
    assert!((a.high - a.low - 2.0 * half).abs() < 0.02, "{a:?}");
    assert_eq!(bootstrap(&v, 2000, 7).unwrap(), a);
    assert_ne!(bootstrap(&v, 2000, 8).unwrap(), a);
    assert!(bootstrap(&[], 10, 0).is_err());
    assert!(bootstrap(&[1.0], 0, 0).is_err());
    assert!(bootstrap(&[f64::NAN], 10, 0).is_err());
}

#[test]
fn bootstrap_of_a_statistic_draws_as_the_mean_does() {
    use attrib_eval::summary::{bootstrap, bootstrap_statistic};
    let v = [0.1, 0.5, 0.9, 0.3, 0.25];
    let mean = |s: &[&f64]| s.iter().map(|&&x| x).sum::<f64>() / s.len() as f64;
    assert_eq!(
        bootstrap(&v, 500, 3).unwrap(),
        bootstrap_statistic(&v, 500, 3, mean).unwrap()
    );
    // TorchRay's class-averaged accuracy: (1/2 + 1/1) / 2.
    let plays = [("a", true), ("a", false), ("b", true)];
    let avg = |s: &[&(&str, bool)]| {
        let mut per = std::collections::BTreeMap::new();
        for (l, h) in s {
            let e: &mut (u32, u32) = per.entry(*l).or_default();
            e.0 += *h as u32;
            e.1 += 1;
        }
        per.values().map(|&(h, n)| h as f64 / n as f64).sum::<f64>() / per.len() as f64
    };
    let i = bootstrap_statistic(&plays, 200, 1, avg).unwrap();
    assert_eq!((i.mean, i.n), (0.75, 3));
    assert!(i.low <= i.mean && i.mean <= i.high && i.low >= 0.0 && i.high <= 1.0);
    assert!(bootstrap_statistic(&plays, 10, 1, |_| f64::NAN).is_err());
}
