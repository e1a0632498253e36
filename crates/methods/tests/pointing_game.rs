//! Does word-level Grad-CAM point at the named object? The pointing game (Zhang et
//! al.) on the trained models of `tools/reference` (train_captioner.py,
//! train_vqa.py), over their held-out sets in `fixtures/pointing/`: a hit when the
//! maximum of the map, upsampled to the image, lies inside the object's box (or, as
//! TorchRay plays it, within 15 pixels of it at 224, scaled to the image). Prints
//! the rates (`cargo test -p attrib-methods --test pointing_game -- --nocapture`),
//! strictly inside the box and within TorchRay's tolerance, and asserts the latter
//! stays at the measured level.

use std::path::{Path, PathBuf};

use attrib_core::resample::resize_bilinear;
use attrib_core::{Attribution, Target};
use attrib_dfdx::imagenet;
use attrib_dfdx::zoo::show_and_tell::ShowAndTell;
use attrib_dfdx::zoo::text::Vocab;
use attrib_dfdx::zoo::vqa::Vqa;
use attrib_methods::GradCam;
use ndarray::{s, Array2, Array3, Axis};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// How far the maximum of `map` (h, w), upsampled to `size`, lies from the box `b`
/// (x0, y0, x1, y1, inclusive): 0 inside, else the distance in pixels to its nearest
/// point.
fn distance(map: ndarray::ArrayView2<f32>, size: usize, b: &Value) -> f64 {
    let up = resize_bilinear(map.insert_axis(Axis(0)), size, size);
    let (mut best, mut at) = (f32::NEG_INFINITY, (0, 0));
    for ((_, y, x), &v) in up.indexed_iter() {
        if v > best {
            best = v;
            at = (x, y);
        }
    }
    let c = |i: usize| b[i].as_u64().unwrap() as f64;
    let (x, y) = (at.0 as f64, at.1 as f64);
    let dx = (c(0) - x).max(x - c(2)).max(0.0);
    let dy = (c(1) - y).max(y - c(3)).max(0.0);
    dx.hypot(dy)
}

/// Hit rates: strictly inside the box, and within TorchRay's tolerance (15 pixels at
/// 224, scaled to the image: the pointing game of Zhang et al. as TorchRay plays it).
fn rates(distances: &[f64], size: usize) -> (f64, f64) {
    let tol = 15.0 * size as f64 / 224.0;
    let n = distances.len() as f64;
    (
        distances.iter().filter(|&&d| d == 0.0).count() as f64 / n,
        distances.iter().filter(|&&d| d <= tol).count() as f64 / n,
    )
}

#[test]
fn captioner_word_grad_cam_points_at_the_named_object() {
    let dir = root().join("assets/models/captioner");
    let model =
        ShowAndTell::<f32>::load(&dir.join("encoder.pth"), &dir.join("decoder.pth")).unwrap();
    let vocab = Vocab::load(&dir.join("vocab.txt")).unwrap();
    model.check_vocab(&vocab).unwrap();
    let held = root().join("fixtures/pointing/captions");
    let scenes = json(&held.join("scenes.json"));
    let (start, end) = (
        vocab.special("<start>").unwrap(),
        vocab.special("<end>").unwrap(),
    );
    let (mut shape, mut colour, mut exact) = (Vec::new(), Vec::new(), 0);
    for scene in scenes.as_array().unwrap() {
        let x = imagenet::load_image(&held.join(scene["image"].as_str().unwrap()), 96).unwrap();
        let caption = scene["caption"].as_str().unwrap();
        let t = vocab.tokenize(caption, "caption").unwrap();
        let mut tokens = vec![start];
        tokens.extend(&t.ids);
        tokens.push(end);
        // Greedy decoding in Rust gives the caption the PyTorch model gave.
        let f = model.features(x.view()).unwrap();
        let ids = model.greedy(&f, 20).unwrap();
        let words: Vec<&str> = ids[1..]
            .iter()
            .take_while(|&&t| t != end)
            .map(|&t| vocab.token(t))
            .collect();
        assert_eq!(words.join(" "), scene["greedy"].as_str().unwrap());
        exact += (words.join(" ") == caption) as usize;
        // "a <colour> <shape>" names object 0 (the grey ones are never named):
        // words 1 and 2. One pass: a copy of the image per word.
        let words = [1usize, 2];
        let xs = ndarray::concatenate(Axis(0), &[x.view(); 2]).unwrap();
        let conditioned = model.conditioned(&vec![tokens.clone(); 2]).unwrap();
        let mut seed = Array2::<f32>::zeros((2, tokens.len() - 1));
        for (r, &w) in words.iter().enumerate() {
            seed[[r, w]] = 1.0;
        }
        let cam = GradCam::new()
            .attribute(&conditioned, xs.view(), &Target::Seed(seed))
            .unwrap();
        let maps: Array3<f32> = cam.values.into_dimensionality().unwrap();
        let object = &scene["objects"][0];
        colour.push(distance(maps.slice(s![0, .., ..]), 96, &object["box"]));
        shape.push(distance(maps.slice(s![1, .., ..]), 96, &object["box"]));
    }
    let ((shape_in, shape_tol), (colour_in, colour_tol)) = (rates(&shape, 96), rates(&colour, 96));
    eprintln!(
        "captioner: {exact}/100 greedy captions exact; pointing game over {} scenes, inside the box / within {:.1} px: shape words {shape_in:.2} / {shape_tol:.2}, colour words {colour_in:.2} / {colour_tol:.2}",
        shape.len(),
        15.0 * 96.0 / 224.0
    );
    // Measured 0.85 and 0.98: the shape words' misses are Grad-CAM's own (the
    // channel weights favour border and blob activations for some triangles, where
    // guided backprop and occlusion point at the triangle); the bar sits below.
    assert!(shape_tol >= 0.8, "shape words: {shape_tol}");
    assert!(colour_tol >= 0.9, "colour words: {colour_tol}");
}

#[test]
fn vqa_answer_grad_cam_points_at_the_shape() {
    let dir = root().join("assets/models/vqa");
    let model = Vqa::<f32>::load(&dir.join("vqa.pth")).unwrap();
    let vocab = Vocab::load(&dir.join("questions.txt")).unwrap();
    let answers: Vec<String> = std::fs::read_to_string(dir.join("answers.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let held = root().join("fixtures/pointing/vqa");
    let items = json(&held.join("questions.json"));
    let (mut distances, mut correct) = (Vec::new(), 0);
    for item in items.as_array().unwrap() {
        let x = imagenet::load_image(&held.join(item["image"].as_str().unwrap()), 64).unwrap();
        let q = vocab
            .tokenize(item["question"].as_str().unwrap(), "question")
            .unwrap();
        let conditioned = model.conditioned(&[q.ids]).unwrap();
        let cam = GradCam::new()
            .attribute(&conditioned, x.view(), &Target::TopPredicted)
            .unwrap();
        let predicted = cam.classes[0].unwrap();
        correct += (answers[predicted] == item["answer"].as_str().unwrap()) as usize;
        let map: Array3<f32> = cam.values.into_dimensionality().unwrap();
        distances.push(distance(map.slice(s![0, .., ..]), 64, &item["box"]));
    }
    let (inside, tol) = rates(&distances, 64);
    eprintln!(
        "vqa: {correct}/{} answers right; pointing game of the answer's Grad-CAM, inside the box / within {:.1} px: {inside:.2} / {tol:.2}",
        distances.len(),
        15.0 * 64.0 / 224.0
    );
    assert!(tol >= 0.9, "vqa pointing game: {tol}");
}
