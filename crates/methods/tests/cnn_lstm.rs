//! Every method on conditioned CNN+LSTM models (a captioner, a VQA model), in f64:
//! explaining a batch of captions of different lengths gives each item's maps as if
//! it were alone (padded steps contribute nothing), targets on steps past a caption's
//! end are errors, the gradients of the words through the whole model match finite
//! differences, and CAM says it has no GAP + linear head.

use attrib_core::{Attribution, Error, LayerTap, Model, Target};
use attrib_dfdx::zoo::show_and_tell::{DecoderSpec, ShowAndTell};
use attrib_dfdx::zoo::trunks::{ConvLayer, Trunk};
use attrib_dfdx::zoo::vqa::{Vqa, VqaSpec};
use attrib_methods::rows::ItemRows;
use attrib_methods::{
    AblationCam, Cam, Deconvnet, EigenCam, GradCam, GradCamPlusPlus, Gradient, GuidedBackprop,
    GuidedGradCam, HiResCam, InputXGradient, IntegratedGradients, LayerCam, NoiseKind, NoiseTunnel,
    Occlusion, Saliency, ScoreCam, XGradCam,
};
use ndarray::{s, Array2, Array4, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn trunk() -> Trunk {
    Trunk::Convs(vec![
        ConvLayer {
            index: 0,
            out: 6,
            inp: 3,
            kernel: 3,
            bias: true,
            pool: true,
        },
        ConvLayer {
            index: 3,
            out: 8,
            inp: 6,
            kernel: 3,
            bias: true,
            pool: false,
        },
    ])
}

fn captioner() -> ShowAndTell<f64> {
    let spec = DecoderSpec {
        vocab: 9,
        embed: 5,
        hidden: 6,
        layers: 2,
    };
    ShowAndTell::synthetic(4, trunk(), spec).unwrap()
}

fn input(n: usize, seed: u64) -> Array4<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array4::from_shape_simple_fn((n, 3, 12, 12), || rng.gen_range(-1.0..1.0))
}

type Named<M> = (&'static str, Box<dyn Attribution<f64, M>>);

fn methods<M: LayerTap<f64>>() -> Vec<Named<M>> {
    vec![
        ("gradient", Box::new(Gradient)),
        ("saliency", Box::new(Saliency)),
        ("deconvnet", Box::new(Deconvnet)),
        ("guided-backprop", Box::new(GuidedBackprop)),
        ("grad-cam", Box::new(GradCam::new())),
        (
            "counterfactual-grad-cam",
            Box::new(GradCam::counterfactual()),
        ),
        ("guided-grad-cam", Box::new(GuidedGradCam::new())),
        ("occlusion", Box::new(Occlusion::new(4, 4))),
        ("grad-cam-plus-plus", Box::new(GradCamPlusPlus::new())),
        ("xgrad-cam", Box::new(XGradCam::new())),
        ("layer-cam", Box::new(LayerCam::new())),
        ("hires-cam", Box::new(HiResCam::new())),
        ("score-cam", Box::new(ScoreCam::new().max_batch(5))),
        ("ablation-cam", Box::new(AblationCam::new().max_batch(5))),
        ("eigen-cam", Box::new(EigenCam::new())),
        (
            "integrated-gradients",
            Box::new(IntegratedGradients::new().steps(4).max_batch(3)),
        ),
        ("input-x-gradient", Box::new(InputXGradient)),
        // Without noise, so a batch and its items agree: what is checked is that
        // every stacked copy keeps its item's query.
        (
            "smoothgrad",
            Box::new(
                NoiseTunnel::new(GuidedBackprop, NoiseKind::SmoothGrad)
                    .samples(3)
                    .std(0.0)
                    .max_batch(2),
            ),
        ),
    ]
}

fn close(a: &ndarray::ArrayD<f64>, b: &ndarray::ArrayD<f64>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let d = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        d <= 1e-10 * scale.max(1.0),
        "{what}: {d:e} at scale {scale:e}"
    );
}

#[test]
fn a_batch_of_captions_explains_each_as_if_alone() {
    let sat = captioner();
    let captions = vec![vec![1, 4, 7, 5, 2], vec![1, 6, 2], vec![1, 3, 8, 2]];
    let x = input(3, 1);
    let batch = sat.conditioned(&captions).unwrap();
    assert_eq!(batch.num_outputs(), 4);
    // Word 0 of every caption; then each whole caption (ones on the outputs it has).
    let mut seed = Array2::zeros((3, 4));
    for (i, c) in captions.iter().enumerate() {
        seed.slice_mut(s![i, ..c.len() - 1]).fill(1.0);
    }
    for target in [Target::Class(0), Target::Seed(seed.clone())] {
        for (name, m) in methods() {
            let all = m.attribute(&batch, x.view(), &target).unwrap().values;
            for (i, c) in captions.iter().enumerate() {
                let alone = sat.conditioned(std::slice::from_ref(c)).unwrap();
                let t = match &target {
                    Target::Seed(s) => {
                        Target::Seed(s.slice(s![i..i + 1, ..c.len() - 1]).to_owned())
                    }
                    other => other.clone(),
                };
                let one = m
                    .attribute(&alone, x.slice(s![i..i + 1, .., .., ..]), &t)
                    .unwrap()
                    .values;
                close(
                    &all.index_axis(Axis(0), i).insert_axis(Axis(0)).to_owned(),
                    &one,
                    &format!("{name}, item {i}"),
                );
            }
        }
    }
    // Word 2 exists for the first and third captions only.
    let e = Gradient
        .attribute(&batch, x.view(), &Target::Class(2))
        .unwrap_err();
    assert_eq!(e, Error::UndefinedOutput { item: 1, output: 2 });
    // The last output of item 1 is undefined: NaN, and a seed may skip it.
    let scores = batch.forward(x.view()).unwrap();
    assert!(scores[[1, 2]].is_nan() && scores[[1, 3]].is_nan() && scores[[1, 1]].is_finite());
    // CAM has no GAP + linear head here.
    let e = Cam
        .attribute(&batch, x.view(), &Target::Class(0))
        .unwrap_err();
    assert!(e.to_string().starts_with("cam is not applicable"), "{e}");
}

/// `g` is the gradient of `f` at `x`: central differences (step 1e-6) agree to 1e-6
/// of its largest entry.
fn matches_central_differences(
    g: &ndarray::ArrayD<f64>,
    x: &Array4<f64>,
    f: impl Fn(&Array4<f64>) -> f64,
) {
    let h = 1e-6;
    let mut worst = 0.0f64;
    let scale = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, gi) in g.iter().enumerate() {
        let (mut p, mut m) = (x.clone(), x.clone());
        p.as_slice_mut().unwrap()[i] += h;
        m.as_slice_mut().unwrap()[i] -= h;
        worst = worst.max(((f(&p) - f(&m)) / (2.0 * h) - gi).abs());
    }
    assert!(
        scale > 1e-4 && worst <= 1e-6 * scale,
        "{worst:e} at scale {scale:e}"
    );
}

#[test]
fn word_gradients_match_finite_differences() {
    let sat = captioner();
    let captions = vec![vec![1, 4, 7, 5, 2], vec![1, 6, 2]];
    let model = sat.conditioned(&captions).unwrap();
    let x = input(2, 2);
    let target = Target::PerSample(vec![2, 1]);
    let g = Gradient
        .attribute(&model, x.view(), &target)
        .unwrap()
        .values;
    let f = |x: &Array4<f64>| {
        let s = model.forward(x.view()).unwrap();
        s[[0, 2]] + s[[1, 1]]
    };
    matches_central_differences(&g, &x, f);
}

/// The gradient of stacked copies of the items (what integrated gradients and noise
/// tunnels run: rows 0..3 stand for items 1, 0, 1, each with its own caption)
/// matches finite differences of their scores.
#[test]
fn stacked_item_rows_gradients_match_finite_differences() {
    let sat = captioner();
    let captions = vec![vec![1, 4, 7, 5, 2], vec![1, 6, 2]];
    let model = sat.conditioned(&captions).unwrap();
    let rows = ItemRows::new(&model, vec![1, 0, 1]);
    let x = input(3, 4);
    let target = Target::PerSample(vec![1, 3, 0]);
    let g = Gradient.attribute(&rows, x.view(), &target).unwrap().values;
    let f = |x: &Array4<f64>| {
        let s = rows.forward(x.view()).unwrap();
        s[[0, 1]] + s[[1, 3]] + s[[2, 0]]
    };
    // The rows' scores are their items' captions' scores.
    let s = rows.forward(x.view()).unwrap();
    let alone = sat
        .conditioned(std::slice::from_ref(&captions[1]))
        .unwrap()
        .forward(x.slice(s![0..1, .., .., ..]))
        .unwrap();
    assert!((s[[0, 1]] - alone[[0, 1]]).abs() < 1e-12 && s[[0, 3]].is_nan());
    matches_central_differences(&g, &x, f);
}

#[test]
fn every_method_explains_a_vqa_answer_per_item() {
    let spec = VqaSpec {
        vocab: 10,
        embed: 4,
        hidden: 5,
        layers: 2,
        common: 6,
        mlp: 7,
        answers: 5,
    };
    let vqa = Vqa::<f64>::synthetic(2, trunk(), spec).unwrap();
    let questions = vec![vec![3, 1, 4], vec![1, 5, 9, 2, 6]];
    let x = input(2, 3);
    let model = vqa.conditioned(&questions).unwrap();
    assert_eq!(model.num_outputs(), 5);
    let target = Target::PerSample(vec![1, 4]);
    for (name, m) in methods() {
        let all = m.attribute(&model, x.view(), &target).unwrap().values;
        assert!(all.iter().all(|v| v.is_finite()), "{name}");
        for (i, q) in questions.iter().enumerate() {
            let alone = vqa.conditioned(std::slice::from_ref(q)).unwrap();
            let one = m
                .attribute(
                    &alone,
                    x.slice(s![i..i + 1, .., .., ..]),
                    &target.slice(i, i + 1, 2).unwrap(),
                )
                .unwrap()
                .values;
            close(
                &all.index_axis(Axis(0), i).insert_axis(Axis(0)).to_owned(),
                &one,
                &format!("{name}, item {i}"),
            );
        }
    }
}
