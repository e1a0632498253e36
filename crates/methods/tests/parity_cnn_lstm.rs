//! The CNN+LSTM models against PyTorch (`tools/reference/cnn_lstm_fixtures.py`), with
//! attrib's synthetic weights: Show and Tell's teacher-forced token
//! log-probabilities, greedy decoding, and the gradient, Grad-CAM and Guided Grad-CAM
//! of one word and of a whole caption, in a batch of two captions of different
//! lengths; VQA's answer scores and the same methods for an answer. Relative error at
//! most 1e-4 in f32.

use std::path::{Path, PathBuf};

use attrib_core::{Attribution, LayerTap, Model, Target};
use attrib_dfdx::zoo::show_and_tell::{DecoderSpec, ShowAndTell};
use attrib_dfdx::zoo::trunks::{ConvLayer, Trunk};
use attrib_dfdx::zoo::vqa::{Vqa, VqaSpec};
use attrib_methods::{GradCam, Gradient, GuidedGradCam};
use ndarray::{Array2, ArrayD, Ix4};
use ndarray_npy::read_npy;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> ArrayD<f32> {
    let p = root()
        .join("fixtures/reference")
        .join(format!("{name}.npy"));
    read_npy(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `max |a - b| / max |b|`, NaN where the reference is NaN required in both.
fn rel_err(got: &ArrayD<f32>, expected: &ArrayD<f32>) -> f64 {
    assert_eq!(got.shape(), expected.shape(), "shape");
    let mut d = 0.0f64;
    let mut s = 0.0f64;
    for (a, b) in got.iter().zip(expected) {
        if b.is_nan() {
            assert!(a.is_nan(), "expected NaN, got {a}");
            continue;
        }
        d = d.max((a - b).abs() as f64);
        s = s.max(b.abs() as f64);
    }
    assert!(s > 0.0, "all-zero reference");
    d / s
}

fn check<M: LayerTap<f32>>(
    model: &M,
    x: &ndarray::Array4<f32>,
    target: &Target<f32>,
    prefix: &str,
) {
    let gc = GradCam::new();
    let methods: [(&str, &dyn Attribution<f32, M>); 3] = [
        ("gradient", &Gradient),
        ("grad-cam", &gc),
        ("guided-grad-cam", &GuidedGradCam::new()),
    ];
    for (name, m) in methods {
        let got = m.attribute(model, x.view(), target).unwrap().values;
        let e = rel_err(&got, &fixture(&format!("{prefix}.{name}")));
        eprintln!("{prefix} {name}: relative error {e:.1e}");
        assert!(e <= 1e-4, "{prefix} {name}: relative error {e:e}");
    }
}

fn show_and_tell() -> ShowAndTell<f32> {
    let spec = DecoderSpec {
        vocab: 15,
        embed: 32,
        hidden: 24,
        layers: 2,
    };
    let trunk = Trunk::Resnet {
        blocks: [2, 2, 2, 2],
        bottleneck: false,
    };
    ShowAndTell::synthetic(0, trunk, spec).unwrap()
}

#[test]
fn show_and_tell_words_and_captions_match_pytorch() {
    let sat = show_and_tell();
    let x = fixture("sat.input").into_dimensionality::<Ix4>().unwrap();
    let captions = vec![vec![1, 4, 7, 9, 5, 2], vec![1, 12, 6, 2]];
    let model = sat.conditioned(&captions).unwrap();
    assert_eq!(model.num_outputs(), 5);
    assert_eq!(model.default_layer(), "resnet.7");
    let scores = model.forward(x.view()).unwrap().into_dyn();
    let e = rel_err(&scores, &fixture("sat.scores"));
    eprintln!("sat scores: relative error {e:.1e}");
    assert!(e <= 1e-4, "scores: {e:e}");
    // One word (word 1 of each caption), then each whole caption: a seed of ones on
    // the outputs it has.
    check(&model, &x, &Target::Class(1), "sat.word1");
    let mut seed = Array2::<f32>::zeros((2, 5));
    seed.row_mut(0).fill(1.0);
    seed.slice_mut(ndarray::s![1, ..3]).fill(1.0);
    check(&model, &x, &Target::Seed(seed), "sat.caption");
    // Word 3 exists for the first caption only.
    let e = Gradient
        .attribute(&model, x.view(), &Target::Class(3))
        .unwrap_err();
    assert_eq!(
        e,
        attrib_core::Error::UndefinedOutput { item: 1, output: 3 }
    );
}

#[test]
fn show_and_tell_greedy_decoding_matches_the_tutorials_sample() {
    let sat = show_and_tell();
    let x = fixture("sat.input").into_dimensionality::<Ix4>().unwrap();
    let features = sat.features(x.view()).unwrap();
    let expected = fixture("sat.greedy");
    for (i, f) in features.chunks(32).enumerate() {
        let ids = sat.greedy(f, 20).unwrap();
        let want: Vec<usize> = expected
            .index_axis(ndarray::Axis(0), i)
            .iter()
            .map(|&v| v as usize)
            .collect();
        assert_eq!(ids, want, "item {i}");
    }
}

#[test]
fn vqa_answers_match_pytorch() {
    let trunk = Trunk::Convs(vec![
        ConvLayer {
            index: 0,
            out: 16,
            inp: 3,
            kernel: 3,
            bias: true,
            pool: true,
        },
        ConvLayer {
            index: 3,
            out: 32,
            inp: 16,
            kernel: 3,
            bias: true,
            pool: true,
        },
        ConvLayer {
            index: 6,
            out: 64,
            inp: 32,
            kernel: 3,
            bias: true,
            pool: false,
        },
    ]);
    let spec = VqaSpec {
        vocab: 20,
        embed: 32,
        hidden: 64,
        layers: 2,
        common: 128,
        mlp: 128,
        answers: 9,
    };
    let vqa = Vqa::<f32>::synthetic(1, trunk, spec).unwrap();
    let x = fixture("vqa.input").into_dimensionality::<Ix4>().unwrap();
    let model = vqa
        .conditioned(&[vec![4, 8, 3, 15, 11], vec![7, 2, 19]])
        .unwrap();
    assert_eq!(model.default_layer(), "cnn");
    let scores = model.forward(x.view()).unwrap().into_dyn();
    let e = rel_err(&scores, &fixture("vqa.scores"));
    eprintln!("vqa scores: relative error {e:.1e}");
    assert!(e <= 1e-4, "scores: {e:e}");
    check(&model, &x, &Target::PerSample(vec![3, 6]), "vqa.answer");
}
