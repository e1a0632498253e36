//! `attrib dense-caption` end to end on the bundled DenseCap: proposals explained
//! region by region, user boxes in the image file's pixels, given captions and
//! words, raw maps equal to the library's, and every error a user can provoke (one
//! line, non-zero exit, no files).

mod common;

use std::path::{Path, PathBuf};

use common::{attrib, fails_with, ok_json, root, tmp};

use attrib_core::{Attribution, Target};
use attrib_dfdx::zoo::densecap::{DenseCap, Proposals};
use attrib_dfdx::zoo::text::Vocab;
use ndarray::{Array2, ArrayD, Axis};
use ndarray_npy::read_npy;
use serde_json::Value;

fn model_dir() -> PathBuf {
    root().join("assets/models/densecap")
}

fn base(out: &Path, extra: &[&str]) -> Vec<String> {
    let d = model_dir();
    let mut a: Vec<String> = vec![
        "dense-caption".into(),
        "--weights".into(),
        d.join("densecap.safetensors").display().to_string(),
        "--vocab".into(),
        d.join("vocab.txt").display().to_string(),
        "--image".into(),
        root()
            .join("fixtures/densecap/input.png")
            .display()
            .to_string(),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn proposals_are_captioned_and_explained_region_by_region() {
    let dir = tmp("proposals");
    let out = dir.join("out");
    let j = ok_json(attrib(&base(
        &out,
        &[
            "--regions",
            "3",
            "--method",
            "grad-cam",
            "--method",
            "guided-backprop",
            "--npy",
        ],
    )));
    let item = &j["items"][0];
    let regions = item["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 3);
    // The proposals are the library's, in rank order, with their captions.
    let model = DenseCap::<f32>::load(&model_dir().join("densecap.safetensors")).unwrap();
    let vocab = Vocab::load(&model_dir().join("vocab.txt")).unwrap();
    let x =
        attrib_dfdx::imagenet::load_image(&root().join("fixtures/densecap/input.png"), 96).unwrap();
    let f = model.feature_map(x.view()).unwrap();
    let props = &model
        .proposals(f.view(), (96, 96), Proposals::default())
        .unwrap()[0];
    let mut queries = Vec::new();
    for (k, r) in regions.iter().enumerate() {
        assert_eq!(r["region"], format!("region{k}"));
        let b: Vec<f64> = r["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (got, want) in b.iter().zip(props[k].bbox) {
            assert!((got - want).abs() < 1e-9);
        }
        assert!((r["proposal_score"].as_f64().unwrap() - props[k].score).abs() < 1e-9);
        assert_eq!(r["generated"], true);
        let words = r["caption"].as_str().unwrap();
        let tokens = r["tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), words.split(' ').count() + 1);
        assert_eq!(tokens.last().unwrap()["token"], "<end>");
        let sum: f64 = tokens.iter().map(|t| t["log_prob"].as_f64().unwrap()).sum();
        assert!((sum - r["caption_log_prob"].as_f64().unwrap()).abs() < 1e-4);
        let mut ids = vec![1];
        ids.extend(vocab.tokenize(words, "caption").unwrap().ids);
        ids.push(2);
        queries.push(([b[0], b[1], b[2], b[3]], ids));
    }
    for name in [
        "input.regions.png",
        "input.region0.panel.png",
        "input.region2.grad-cam.png",
        "dense-caption.json",
    ] {
        assert!(out.join(name).is_file(), "{name}");
    }
    // The raw maps are the library's Grad-CAM of each region's caption.
    let m = model.conditioned(&queries).unwrap();
    let xs = ndarray::concatenate(Axis(0), &[x.view(); 3]).unwrap();
    let l = queries.iter().map(|q| q.1.len() - 1).max().unwrap();
    let mut seed = Array2::<f32>::zeros((3, l));
    for (r, q) in queries.iter().enumerate() {
        for t in 0..q.1.len() - 1 {
            seed[[r, t]] = 1.0;
        }
    }
    let cam = attrib_methods::GradCam::new()
        .attribute(&m, xs.view(), &Target::Seed(seed))
        .unwrap()
        .values;
    for r in 0..3 {
        let got: ArrayD<f32> = read_npy(out.join(format!("input.region{r}.grad-cam.npy"))).unwrap();
        let want = cam.index_axis(Axis(0), r).insert_axis(Axis(0)).to_owned();
        assert_eq!(got, want, "region {r}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn user_boxes_given_captions_and_words() {
    let dir = tmp("boxes");
    let out = dir.join("out");
    // The PNG is 96x96: a box in its pixels is a box in the model's at --size 96,
    // and twice it at --size 192.
    let j = ok_json(attrib(&base(
        &out,
        &[
            "--box",
            "10,10,40,40",
            "--proposal",
            "1",
            "--caption",
            "large red square",
            "--word",
            "1",
            "--size",
            "192",
            "--method",
            "gradient",
        ],
    )));
    let regions = j["items"][0]["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[0]["region"], "box0");
    assert_eq!(
        regions[0]["box"],
        serde_json::json!([20.0, 20.0, 80.0, 80.0])
    );
    assert_eq!(regions[0]["proposal_score"], Value::Null);
    assert_eq!(regions[1]["region"], "region1");
    for r in regions {
        assert_eq!(r["caption"], "large red square");
        assert_eq!(r["generated"], false);
    }
    for name in [
        "input.box0.gradient.png",
        "input.box0.word1.gradient.png",
        "input.region1.word1.gradient.png",
    ] {
        assert!(out.join(name).is_file(), "{name}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn user_errors_are_one_line_and_write_nothing() {
    let dir = tmp("errors");
    let out = dir.join("out");
    let cases: [(&[&str], &str); 10] = [
        (&["--box", "10,10,5,40"], "x1 <= x2"),
        (
            &["--box", "200,200,300,300"],
            "lies outside input (96x96 pixels)",
        ),
        (&["--size", "8"], "pool2d"),
        (&["--box", "1,2,3"], "x1,y1,x2,y2"),
        (&["--proposal", "99"], "--proposal"),
        (&["--caption", "large red square", "--word", "3"], "--word"),
        (&["--nms-iou", "2"], "not in [0, 1]"),
        (&["--regions", "0"], "--regions"),
        (&["--arch", "fcn"], "--arch"),
        (&["--method", "cam"], "cam"),
    ];
    for (extra, needle) in cases {
        fails_with(attrib(&base(&out, extra)), needle);
        assert!(!out.exists(), "{extra:?} wrote files");
    }
    // A vocabulary of the wrong size; weights of another model.
    let mut a = base(&out, &[]);
    a[4] = root()
        .join("assets/models/captioner/vocab.txt")
        .display()
        .to_string();
    fails_with(attrib(&a), "vocabulary");
    let mut a = base(&out, &[]);
    a[2] = root()
        .join("assets/models/vqa/vqa.pth")
        .display()
        .to_string();
    fails_with(attrib(&a), "trunk");
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(dir);
}
