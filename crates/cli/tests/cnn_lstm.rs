//! `attrib caption` and `attrib vqa` end to end on the bundled trained models:
//! outputs and their JSON, generated and given captions, and every error a user can
//! provoke (one line, non-zero exit, no files).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{attrib, ok_json, root, tmp};

/// [`common::fails_with`], with exit status exactly 1 (an error, not a usage error).
fn fails_with(out: Output, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    common::fails_with(out, needle);
}

use attrib_io::{RawTensor, WeightMap};
use ndarray::ArrayD;
use ndarray_npy::read_npy;

fn s(p: PathBuf) -> String {
    p.display().to_string()
}

fn captioner() -> [String; 3] {
    let d = root().join("assets/models/captioner");
    [
        s(d.join("encoder.pth")),
        s(d.join("decoder.pth")),
        s(d.join("vocab.txt")),
    ]
}

fn scene(i: usize) -> String {
    s(root().join(format!("fixtures/pointing/captions/scene{i:03}.png")))
}

#[test]
fn caption_explains_every_word_and_the_caption() {
    let dir = tmp("caption");
    let out = dir.join("out");
    let [e, d, v] = captioner();
    let (s0, s1) = (scene(0), scene(1));
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "caption",
            "--encoder",
            &e,
            "--decoder",
            &d,
            "--vocab",
            &v,
            "--size",
            "96",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| attrib(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // The model's own captions, every word, two methods, raw maps.
    let j = ok_json(run(base(&[
        "--image",
        &s0,
        &s1,
        "--method",
        "grad-cam,guided-grad-cam",
        "--npy",
    ])));
    assert_eq!(j["layers"]["grad-cam"], "cnn");
    let items = j["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["generated"], true);
        let words = item["caption"].as_str().unwrap().split(' ').count();
        let tokens = item["tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), words + 1, "{item}");
        assert_eq!(tokens[words]["token"], "<end>");
        let total: f64 = tokens.iter().map(|t| t["log_prob"].as_f64().unwrap()).sum();
        assert!((total - item["caption_log_prob"].as_f64().unwrap()).abs() < 1e-4);
        for f in item["files"].as_array().unwrap() {
            assert!(Path::new(f.as_str().unwrap()).exists(), "{f}");
        }
    }
    let gc: ArrayD<f32> = read_npy(out.join("scene000.word2.grad-cam.npy")).unwrap();
    assert_eq!(gc.shape(), &[1, 24, 24]);
    let ggc: ArrayD<f32> = read_npy(out.join("scene000.caption.guided-grad-cam.npy")).unwrap();
    assert_eq!(ggc.shape(), &[1, 3, 96, 96]);
    // A given caption, one word, beam search ignored, an unknown word reported.
    let o = run(base(&[
        "--image",
        &s0,
        "--caption",
        "A purple circle.",
        "--word",
        "2",
    ]));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let j = ok_json(o);
    let item = &j["items"][0];
    assert_eq!(item["generated"], false);
    assert_eq!(item["caption"], "a purple circle .");
    assert_eq!(item["unknown"], serde_json::json!(["purple", "."]));
    assert_eq!(item["explained_words"], serde_json::json!([2]));
    assert_eq!(
        err.trim_end(),
        "warning: words not in the vocabulary, read as <unk>: purple, ."
    );
    // Beam search gives a caption too.
    let j = ok_json(run(base(&["--image", &s0, "--beam", "3"])));
    assert!(!j["items"][0]["caption"].as_str().unwrap().is_empty());
}

#[test]
fn caption_errors_are_one_line_and_leave_no_files() {
    let dir = tmp("caption-errors");
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    let [e, d, v] = captioner();
    let s0 = scene(0);
    let run = |extra: &[&str]| {
        let mut a = vec![
            "caption",
            "--encoder",
            &e,
            "--decoder",
            &d,
            "--vocab",
            &v,
            "--size",
            "96",
            "--out",
            o,
            "--quiet",
            "--image",
            &s0,
        ];
        a.extend_from_slice(extra);
        attrib(&a)
    };
    fails_with(run(&["--caption", "  "]), "invalid --caption: is empty");
    fails_with(
        run(&["--caption", "a red circle", "--word", "3"]),
        "invalid --word: 3: the caption of scene000 has 3 words (0..=2)",
    );
    fails_with(run(&["--beam", "0"]), "invalid --beam: must be positive");
    fails_with(run(&["--layer", "cnn.99"]), "unknown layer `cnn.99`");
    fails_with(
        attrib(&[
            "caption",
            "--arch",
            "vgg16",
            "--encoder",
            &e,
            "--decoder",
            &d,
            "--vocab",
            &v,
            "--image",
            &s0,
        ]),
        "invalid --arch: unknown `vgg16`; this command takes show-and-tell",
    );
    // A decoder embedding words in 32 for an encoder giving 64 features.
    let bad = dir.join("decoder32.safetensors");
    let mut m = WeightMap::new();
    let t = |shape: Vec<usize>| {
        let n = shape.iter().product();
        RawTensor::from_f32(shape, &vec![0.0; n])
    };
    m.insert("embed.weight", t(vec![12, 32]));
    m.insert("lstm.weight_ih_l0", t(vec![64, 32]));
    m.insert("lstm.weight_hh_l0", t(vec![64, 16]));
    m.insert("lstm.bias_ih_l0", t(vec![64]));
    m.insert("lstm.bias_hh_l0", t(vec![64]));
    m.insert("linear.weight", t(vec![12, 16]));
    m.insert("linear.bias", t(vec![12]));
    m.save_safetensors(&bad).unwrap();
    fails_with(
        attrib(&[
            "caption", "--encoder", &e, "--decoder", bad.to_str().unwrap(), "--vocab", &v, "--image", &s0,
            "--out", o,
        ]),
        "decoder: the encoder gives features of 64 (`linear.weight` [64, 64]) but the decoder embeds words in 32 (`embed.weight` [12, 32])",
    );
    // A vocabulary of the wrong size.
    let short = dir.join("vocab.txt");
    std::fs::write(&short, "<pad>\n<start>\n<end>\n<unk>\n").unwrap();
    fails_with(
        attrib(&[
            "caption",
            "--encoder",
            &e,
            "--decoder",
            &d,
            "--vocab",
            short.to_str().unwrap(),
            "--image",
            &s0,
            "--out",
            o,
        ]),
        "shape mismatch for vocabulary: expected 12 tokens",
    );
    assert!(!out.exists(), "no files after failures");
}

#[test]
fn vqa_explains_answers() {
    let dir = tmp("vqa");
    let out = dir.join("out");
    let m = root().join("assets/models/vqa");
    let (w, q, a) = (
        s(m.join("vqa.pth")),
        s(m.join("questions.txt")),
        s(m.join("answers.txt")),
    );
    let img = s(root().join("fixtures/pointing/vqa/0.png"));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "vqa",
            "--weights",
            &w,
            "--questions",
            &q,
            "--answers",
            &a,
            "--image",
            &img,
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ];
        args.extend_from_slice(extra);
        attrib(&args)
    };
    let j = ok_json(run(&[
        "--question",
        "What shape is in the image?",
        "--method",
        "all",
        "--npy",
    ]));
    assert_eq!(
        j["tokens"],
        serde_json::json!(["what", "shape", "is", "in", "the", "image", "?"])
    );
    let item = &j["items"][0];
    assert_eq!(item["top"].as_array().unwrap().len(), 5);
    assert_eq!(item["explained"]["answer"], item["top"][0]["answer"]);
    let gc: ArrayD<f32> = read_npy(out.join("0.grad-cam.npy")).unwrap();
    assert_eq!(gc.shape(), &[1, 16, 16]);
    assert!(out.join("0.occlusion.png").exists() && out.join("0.panel.png").exists());
    let j = ok_json(run(&[
        "--question",
        "what color is the shape?",
        "--answer",
        "red",
    ]));
    assert_eq!(j["items"][0]["explained"]["answer"], "red");
    // The baselines explain an answer too, a noise tunnel keeping the question.
    let j = ok_json(run(&[
        "--question",
        "What shape is in the image?",
        "--method",
        "ablation-cam,eigen-cam,integrated-gradients",
        "--ig-steps",
        "4",
        "--npy",
    ]));
    assert_eq!(j["layers"]["ablation-cam"], "cnn");
    let ab: ArrayD<f32> = read_npy(out.join("0.ablation-cam.npy")).unwrap();
    assert_eq!(ab.shape(), &[1, 16, 16]);
    let ig: ArrayD<f32> = read_npy(out.join("0.integrated-gradients.npy")).unwrap();
    assert_eq!(ig.shape()[..2], [1, 3]);
    ok_json(run(&[
        "--question",
        "What shape is in the image?",
        "--method",
        "input-x-gradient",
        "--noise-tunnel",
        "smoothgrad",
        "--noise-samples",
        "3",
        "--npy",
    ]));
    assert!(out.join("0.input-x-gradient.npy").exists());
    let bad = dir.join("bad");
    let bo = bad.to_str().unwrap();
    let run_bad = |extra: &[&str]| {
        let mut args = vec![
            "vqa",
            "--weights",
            &w,
            "--questions",
            &q,
            "--answers",
            &a,
            "--image",
            &img,
            "--out",
            bo,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        attrib(&args)
    };
    fails_with(
        run_bad(&["--question", "?!", "--answer", "purple"]),
        "invalid --answer: `purple` is not an answer; valid: top1, circle",
    );
    fails_with(run_bad(&["--question", ""]), "invalid --question: is empty");
    let cap_vocab = s(root().join("assets/models/captioner/vocab.txt"));
    fails_with(
        attrib(&[
            "vqa",
            "--weights",
            &w,
            "--questions",
            &cap_vocab,
            "--answers",
            &a,
            "--image",
            &img,
            "--question",
            "what?",
            "--out",
            bo,
        ]),
        "shape mismatch for question vocabulary",
    );
    assert!(!bad.exists());
}
