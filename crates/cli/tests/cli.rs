//! The `attrib` command end to end: every subcommand, and every error a user can
//! provoke (one line on stderr, non-zero exit, no output files left behind).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{attrib, fails_with, ok_json, root, tmp};

use attrib_dfdx::{Arch, WeightMap};
use ndarray::{Array4, ArrayD};
use ndarray_npy::{read_npy, write_npy};
use serde_json::Value;

/// ResNet-18 with synthetic weights and 10 classes, saved once.
fn weights() -> &'static Path {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let p = tmp("weights").join("resnet18-synthetic.safetensors");
        Arch::Resnet18
            .synthetic_weights(0, 10)
            .unwrap()
            .save_safetensors(&p)
            .unwrap();
        p
    })
}

fn empty(dir: &Path) -> bool {
    !dir.exists() || std::fs::read_dir(dir).unwrap().next().is_none()
}

fn chelsea() -> String {
    root().join("assets/chelsea.png").display().to_string()
}

fn coffee() -> String {
    root().join("assets/coffee.png").display().to_string()
}

#[test]
fn layers_lists_taps_and_marks_the_default() {
    let out = attrib(&["layers", "--arch", "resnet18"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let default: Vec<&str> = text.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(default.len(), 1, "{text}");
    assert!(
        default[0].contains("layer4") && default[0].contains("512x7x7"),
        "{}",
        default[0]
    );
    assert!(text.contains("layer2.0.downsample.0"));
    let w = weights().display().to_string();
    let out = attrib(&["layers", "--arch", "resnet18", "--weights", &w]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("10 outputs"));
    fails_with(
        attrib(&["layers", "--arch", "resnet9"]),
        "error: invalid architecture: unknown `resnet9`; valid: resnet18, resnet34",
    );
}

#[test]
fn convert_reads_pth_and_writes_safetensors() {
    let dir = tmp("convert");
    let out = dir.join("tiny.safetensors");
    for f in ["tiny_vgg_legacy.pth", "tiny_vgg_zip.pth"] {
        let input = root().join("fixtures/pth").join(f);
        let r = attrib(&["convert", input.to_str().unwrap(), out.to_str().unwrap()]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let expected =
            WeightMap::load(&root().join("fixtures/reference/tiny_vgg.safetensors")).unwrap();
        assert_eq!(WeightMap::load(&out).unwrap(), expected);
    }
    let bad = dir.join("bad.pth");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    let target = dir.join("never.safetensors");
    fails_with(
        attrib(&["convert", bad.to_str().unwrap(), target.to_str().unwrap()]),
        "unrecognised format: not safetensors, nor a PyTorch checkpoint (zip or legacy); the file starts with [6e 6f 74 20 61 20 63 68]",
    );
    assert!(!target.exists());
}

#[test]
fn predict_gives_sorted_probabilities() {
    let w = weights().display().to_string();
    let j = ok_json(attrib(&[
        "predict",
        "--arch",
        "resnet18",
        "--weights",
        &w,
        "--image",
        &chelsea(),
        &coffee(),
        "--size",
        "64",
        "--topk",
        "3",
    ]));
    let items = j["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["input"], "chelsea");
    let top = items[1]["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    let p: Vec<f64> = top
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert!(p[0] >= p[1] && p[1] >= p[2] && p.iter().sum::<f64>() <= 1.0 + 1e-6);
    assert!(top[0]["name"].is_string());
}

#[test]
fn explain_images_with_every_method() {
    let dir = tmp("explain");
    let w = weights().display().to_string();
    let out = dir.join("out");
    let j = ok_json(attrib(&[
        "explain",
        "--arch",
        "resnet18",
        "--weights",
        &w,
        "--image",
        &chelsea(),
        &coffee(),
        "--size",
        "64",
        "--method",
        "all",
        "--target",
        "3,7",
        "--out",
        out.to_str().unwrap(),
        "--npy",
        "--occlusion-window",
        "16",
        "--occlusion-stride",
        "16",
        "--quiet",
    ]));
    let items = j["items"].as_array().unwrap();
    assert_eq!(items[0]["target"]["class"], 3);
    assert_eq!(items[1]["target"]["class"], 7);
    assert_eq!(j["layers"]["grad-cam"], "layer4");
    for f in items[0]["files"].as_array().unwrap() {
        assert!(Path::new(f.as_str().unwrap()).exists(), "{f}");
    }
    let g: ArrayD<f32> = read_npy(out.join("chelsea.gradient.npy")).unwrap();
    assert_eq!(g.shape(), &[1, 3, 64, 64]);
    let gc: ArrayD<f32> = read_npy(out.join("coffee.grad-cam.npy")).unwrap();
    assert_eq!(gc.shape(), &[1, 2, 2]);
    let s: ArrayD<f32> = read_npy(out.join("coffee.saliency.npy")).unwrap();
    assert_eq!(s.shape(), &[1, 64, 64]);
    let panel = image::open(out.join("chelsea.panel.png")).unwrap();
    assert!(panel.width() > 10 * 64);
    // Only complete files: no temporary names.
    assert!(std::fs::read_dir(&out).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("partial")));
}

#[test]
fn explain_a_tensor_batch() {
    let dir = tmp("tensor");
    let x = Array4::from_shape_fn((2, 3, 32, 32), |(n, c, i, j)| {
        ((n + c + i * j) % 7) as f32 / 7.0 - 0.5
    });
    let input = dir.join("batch.npy");
    write_npy(&input, &x).unwrap();
    let out = dir.join("out");
    let w = weights().display().to_string();
    let j = ok_json(attrib(&[
        "explain",
        "--arch",
        "resnet18",
        "--weights",
        &w,
        "--input",
        input.to_str().unwrap(),
        "--method",
        "grad-cam",
        "--method",
        "saliency",
        "--layer",
        "layer3",
        "--out",
        out.to_str().unwrap(),
        "--npy",
        "--quiet",
    ]));
    assert_eq!(j["items"][1]["input"], "batch.1");
    let gc: ArrayD<f32> = read_npy(out.join("batch.grad-cam.npy")).unwrap();
    assert_eq!(gc.shape(), &[2, 2, 2]); // layer3 is 1/16 of 32
    assert!(out.join("batch.0.panel.png").exists());
}

#[test]
fn bad_input_is_one_line_and_leaves_no_files() {
    let dir = tmp("errors");
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    let w = weights().display().to_string();
    let c = chelsea();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "explain",
            "--arch",
            "resnet18",
            "--weights",
            &w,
            "--size",
            "64",
            "--out",
            o,
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| attrib(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fails_with(
        run(base(&["--image", "/nonexistent/cat.png"])),
        "/nonexistent/cat.png: cannot read the image",
    );
    let text = dir.join("notes.png");
    std::fs::write(&text, b"hello").unwrap();
    fails_with(
        run(base(&["--image", text.to_str().unwrap()])),
        "cannot read the image",
    );
    let t3 = dir.join("three.npy");
    write_npy(&t3, &ndarray::Array3::<f32>::zeros((3, 8, 8))).unwrap();
    fails_with(
        run(base(&["--input", t3.to_str().unwrap()])),
        "expected (N, C, H, W), got [3, 8, 8]",
    );
    let gray = dir.join("gray.npy");
    write_npy(&gray, &Array4::<f32>::zeros((1, 1, 64, 64))).unwrap();
    fails_with(
        run(base(&["--input", gray.to_str().unwrap()])),
        "expected (N, 3, H, W) with H, W > 0, got (1, 1, 64, 64)",
    );
    fails_with(
        run(base(&["--image", &c, "--method", "lime"])),
        "invalid --method: unknown `lime`; valid: gradient, saliency",
    );
    fails_with(
        run(base(&["--image", &c, "--layer", "layer9"])),
        "unknown layer `layer9`; valid layers: conv1, bn1",
    );
    fails_with(
        run(base(&["--image", &c, "--target", "10"])),
        "class 10 out of range for batch item 0: the model has 10 outputs",
    );
    fails_with(
        run(base(&["--image", &c, "--target", "1,2"])),
        "expected 1 class (one per batch item), got 2 classes",
    );
    fails_with(
        run(base(&["--image", &c, "--target", "cat"])),
        "invalid --target",
    );
    fails_with(
        run(base(&["--image", &c, "--colormap", "rainbow"])),
        "invalid --colormap: unknown `rainbow`; valid: jet",
    );
    fails_with(
        run(base(&[
            "--image",
            &c,
            "--method",
            "occlusion",
            "--occlusion-window",
            "100",
        ])),
        "invalid occlusion window: 100x100 is larger than the 64x64 input",
    );
    fails_with(
        run(base(&[
            "--image",
            &c,
            "--method",
            "occlusion",
            "--occlusion-stride",
            "20",
        ])),
        "invalid occlusion stride: 20 rows is larger than the window's 16",
    );
    let mut vgg = base(&["--image", &c]);
    vgg[2] = "vgg16".into();
    fails_with(
        run(vgg),
        "does not fit vgg16: missing tensor `classifier.6.weight`",
    );
    fails_with(
        attrib(&[
            "explain",
            "--arch",
            "resnet18",
            "--weights",
            "/nonexistent.safetensors",
            "--image",
            &c,
        ]),
        "/nonexistent.safetensors",
    );
    fails_with(attrib(&["explain", "--arch", "resnet18"]), "error:");
    assert!(empty(&out), "no output files after failures");
}

#[test]
fn bench_prints_one_json_line() {
    let j = ok_json(attrib(&[
        "bench",
        "--arch",
        "resnet18",
        "--method",
        "grad-cam",
        "--size",
        "64",
        "--batch",
        "2",
        "--iters",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
    ]));
    for k in [
        "arch",
        "method",
        "batch",
        "size",
        "threads",
        "median_ms",
        "min_ms",
        "peak_rss_mb",
    ] {
        assert!(j.get(k).is_some(), "{k} missing in {j}");
    }
    assert_eq!(j["threads"], 1);
    assert_eq!(j["batch"], 2);
    assert!(j["median_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(j["device"], "cpu");
    assert!(j["rel_diff"].is_null() && j["gpu_peak_mb"].is_null(), "{j}");
    // --check-cpu on the CPU: the same computation twice, no difference.
    let j = ok_json(attrib(&[
        "bench",
        "--arch",
        "resnet18",
        "--method",
        "guided-grad-cam",
        "--size",
        "32",
        "--iters",
        "1",
        "--check-cpu",
    ]));
    assert_eq!(j["rel_diff"].as_f64(), Some(0.0), "{j}");
}

/// `--device cuda` where it cannot run (a build without the GPU path, or no driver):
/// one line saying why, a failing exit, and no output folder.
#[test]
fn device_cuda_fails_cleanly_without_a_gpu() {
    let dir = tmp("device");
    let out = dir.join("out");
    let (w, c, o) = (
        weights().display().to_string(),
        chelsea(),
        out.to_str().unwrap(),
    );
    let m = root().join("assets/models");
    let p = |rel: &str| m.join(rel).display().to_string();
    let img = root()
        .join("fixtures/pointing/vqa/0.png")
        .display()
        .to_string();
    let resnet = [
        "--arch",
        "resnet18",
        "--weights",
        &w,
        "--image",
        &c,
        "--size",
        "32",
    ];
    let outputs = ["--out", o, "--quiet"];
    let strings = |parts: &[&[&str]]| -> Vec<String> {
        let mut v: Vec<String> = parts.concat().iter().map(|s| s.to_string()).collect();
        v.extend(["--device", "cuda"].map(String::from));
        v
    };
    // The classifiers, and the CNN + LSTM commands (their CNN would run on the GPU,
    // the rest on the CPU).
    let commands = [
        strings(&[&["explain"], &resnet, &outputs]),
        strings(&[&["predict"], &resnet]),
        strings(&[&[
            "bench", "--arch", "resnet18", "--method", "saliency", "--size", "32",
        ]]),
        strings(&[
            &[
                "caption",
                "--encoder",
                &p("captioner/encoder.pth"),
                "--decoder",
            ],
            &[
                &p("captioner/decoder.pth"),
                "--vocab",
                &p("captioner/vocab.txt"),
            ],
            &["--image", &img],
            &outputs,
        ]),
        strings(&[
            &["vqa", "--weights", &p("vqa/vqa.pth"), "--questions"],
            &[&p("vqa/questions.txt"), "--answers", &p("vqa/answers.txt")],
            &["--question", "What shape is in the image?", "--image", &img],
            &outputs,
        ]),
        strings(&[
            &[
                "dense-caption",
                "--weights",
                &p("densecap/densecap.safetensors"),
            ],
            &["--vocab", &p("densecap/vocab.txt"), "--image", &img],
            &outputs,
        ]),
    ];
    for args in commands {
        let r = attrib(&args);
        assert!(!r.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains(
                "built without the GPU path; build it with `cargo build --release --features cuda`"
            ) || err.contains("libcuda.so (the NVIDIA driver) was not found"),
            "{err}"
        );
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    let r = attrib(&[
        "bench", "--arch", "resnet18", "--method", "saliency", "--device", "tpu",
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("invalid value 'tpu' for '--device"));
}

/// The demo and the pretrained model: needs the weights `scripts/fetch-weights` caches
/// (CI sets ATTRIB_REQUIRE_WEIGHTS=1, so there they must be present).
#[test]
fn demo_and_grad_cam_on_the_cat() {
    let cache = std::env::var_os("ATTRIB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache"));
    if !cache
        .join("weights/efficientnet-lite0.safetensors")
        .exists()
    {
        assert!(
            std::env::var_os("ATTRIB_REQUIRE_WEIGHTS").is_none(),
            "weights missing: run scripts/fetch-weights"
        );
        eprintln!("skipping: no cached weights (run scripts/fetch-weights)");
        return;
    }
    let dir = tmp("demo");
    let j = ok_json(attrib(&[
        "demo",
        "--out",
        dir.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--quiet",
    ]));
    // The gallery opens with the cat beside the cup, explained for each.
    assert_eq!(j["photos"][0]["photo"], "cat-and-coffee");
    assert_eq!(j["photos"][0]["explained"][0], 285);
    assert!([967, 968].contains(&j["photos"][0]["explained"][1].as_u64().unwrap()));
    assert_eq!(j["photos"][1]["top5"][0]["class"], 285);
    assert_eq!(j["photos"][2]["top5"][0]["class"], 967);
    let cup = j["photos"][0]["explained"][1].as_u64().unwrap();
    for f in [
        "index.html",
        "cat-and-coffee.panel.png",
        "cat-and-coffee.285.grad-cam.png",
        &format!("cat-and-coffee.{cup}.grad-cam.png"),
        "chelsea.panel.png",
        "coffee.panel.png",
        "chelsea.top1.grad-cam.png",
        "coffee.top2.occlusion.png",
        "densecap.html",
        "densecap-000.regions.png",
        "densecap-001.region3.panel.png",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    assert_eq!(
        j["dense_captions"]["items"][1]["regions"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Grad-CAM for "Egyptian cat" sits on the cat: the cat's face fills the centre-left
    // of the photo, the background is at the right edge.
    let w = cache.join("weights/efficientnet-lite0.safetensors");
    let out = dir.join("cam");
    ok_json(attrib(&[
        "explain",
        "--arch",
        "efficientnet-lite0",
        "--weights",
        w.to_str().unwrap(),
        "--image",
        &chelsea(),
        "--target",
        "285",
        "--out",
        out.to_str().unwrap(),
        "--npy",
        "--quiet",
    ]));
    let cam: ArrayD<f32> = read_npy(out.join("chelsea.grad-cam.npy")).unwrap();
    assert_eq!(cam.shape(), &[1, 7, 7]);
    let (mut best, mut at) = (f32::MIN, (0, 0));
    for ((_, y, x), &v) in cam
        .clone()
        .into_dimensionality::<ndarray::Ix3>()
        .unwrap()
        .indexed_iter()
    {
        if v > best {
            best = v;
            at = (y, x);
        }
    }
    assert!(
        (1..=5).contains(&at.0) && (1..=4).contains(&at.1),
        "grad-cam peak at {at:?}"
    );
    let right_edge: f32 = (0..7).map(|y| cam[[0, y, 6]]).sum::<f32>() / 7.0;
    let mean = cam.mean().unwrap();
    assert!(
        right_edge < mean,
        "background column {right_edge} vs mean {mean}"
    );
    // `attrib eval` with the pretrained network on the bundled set: Grad-CAM finds the
    // cat, and points at both objects of the composite, each for its own class.
    let ev = dir.join("eval");
    let assets = root().join("assets");
    let out = attrib(&[
        "eval",
        "--arch",
        "efficientnet-lite0",
        "--weights",
        w.to_str().unwrap(),
        "--data",
        assets.to_str().unwrap(),
        "--annotations",
        assets.join("eval/annotations").to_str().unwrap(),
        "--classes",
        assets.join("eval/classes.json").to_str().unwrap(),
        "--method",
        "grad-cam",
        "--metric",
        "localisation,pointing",
        "--examples",
        "0",
        "--quiet",
        "--out",
        ev.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = std::fs::read_to_string(ev.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rec = |image: &str| records.iter().find(|r| r["image"] == image).unwrap();
    let chelsea = &rec("chelsea.png")["labels"][0];
    assert_eq!(chelsea["top1_error"], false, "{chelsea}");
    let composite = rec("eval/cat-and-coffee.jpg")["labels"].as_array().unwrap();
    for l in composite {
        assert_eq!(l["hit"], true, "{l}");
    }
    // The cat's point in the left half, the cup's in the right.
    assert!(composite[0]["point"][0].as_u64().unwrap() < 300);
    assert!(composite[1]["point"][0].as_u64().unwrap() >= 300);
}

#[test]
fn explain_says_which_layer_each_map_is_at_and_warns() {
    let dir = tmp("layers");
    let w = weights().display().to_string();
    let out = dir.join("out");
    let (c, o) = (chelsea(), out.to_str().unwrap().to_string());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--arch",
            "resnet18",
            "--weights",
            &w,
            "--image",
            &c,
            "--size",
            "64",
            "--out",
            &o,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        attrib(&args)
    };
    // CAM is defined at the layer feeding the GAP head, whatever --layer says.
    let o = run(&["--layer", "layer3.1", "--method", "cam,grad-cam,saliency"]);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let j = ok_json(o);
    assert_eq!(j["layers"]["cam"], "layer4");
    assert_eq!(j["layers"]["grad-cam"], "layer3.1");
    assert_eq!(j["layers"]["saliency"], Value::Null);
    let note = "cam is defined at the layer feeding the global-average-pool head, `layer4`; --layer layer3.1 applies to the Grad-CAM methods";
    assert_eq!(j["warnings"][0], note);
    assert_eq!(stderr.trim_end(), format!("warning: {note}"));
    // Grad-CAM at a 1x1 layer has no spatial resolution.
    let o = run(&["--layer", "avgpool", "--method", "grad-cam,guided-grad-cam"]);
    let j = ok_json(o);
    assert_eq!(j["layers"]["guided-grad-cam"], "avgpool");
    let warnings = j["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("grad-cam at `avgpool`, a 1x1 layer, has no spatial resolution"),
        "{warnings:?}"
    );
    // Without --layer and at a spatial layer: no warnings.
    let j = ok_json(run(&["--method", "cam,grad-cam"]));
    assert_eq!(j["warnings"], serde_json::json!([]));
    assert_eq!(j["layers"]["cam"], "layer4");
}

#[test]
fn methods_lists_every_method_with_its_groups() {
    let out = attrib(&["methods"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().take(2).collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        names,
        [
            "gradient",
            "saliency",
            "deconvnet",
            "guided-backprop",
            "cam",
            "grad-cam",
            "counterfactual-grad-cam",
            "guided-grad-cam",
            "occlusion",
            "grad-cam-plus-plus",
            "xgrad-cam",
            "layer-cam",
            "hires-cam",
            "score-cam",
            "ablation-cam",
            "eigen-cam",
            "integrated-gradients",
            "input-x-gradient"
        ]
    );
    let group = |n: &str| rows.iter().find(|r| r[0] == n).unwrap()[1];
    assert_eq!(group("grad-cam"), "all,cams");
    assert_eq!(group("score-cam"), "cams");
    assert_eq!(group("integrated-gradients"), "gradients");
    assert_eq!(group("guided-grad-cam"), "all");
}

#[test]
fn explain_with_the_baselines() {
    let dir = tmp("baselines");
    let x = Array4::from_shape_fn((1, 3, 32, 32), |(_, c, i, j)| {
        ((c * 5 + i * 3 + j) % 9) as f32 / 9.0 - 0.4
    });
    let input = dir.join("x.npy");
    write_npy(&input, &x).unwrap();
    let w = weights().display().to_string();
    let (inp, out) = (
        input.to_str().unwrap().to_string(),
        dir.join("out").to_str().unwrap().to_string(),
    );
    let run = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--arch",
            "resnet18",
            "--weights",
            &w,
            "--input",
            &inp,
            "--target",
            "3",
            "--out",
            &out,
            "--npy",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        ok_json(attrib(&args))
    };
    let read = |name: &str| -> ArrayD<f32> { read_npy(dir.join("out").join(name)).unwrap() };
    // Both families at two layers: each CAM is pytorch-grad-cam's mean of the
    // normalised maps, at the input's size, in [0, 1].
    let j = run(&[
        "--method",
        "cams,gradients",
        "--layer",
        "layer3",
        "--layer",
        "layer4",
    ]);
    assert_eq!(j["layers"]["score-cam"], "layer3+layer4");
    assert_eq!(j["params"]["integrated-gradients"]["ig-steps"], "50");
    assert_eq!(j["params"]["score-cam"]["cam-batch"], "32");
    assert_eq!(j["layers"]["integrated-gradients"], Value::Null);
    assert_eq!(j["methods"].as_array().unwrap().len(), 16);
    for m in [
        "grad-cam",
        "grad-cam-plus-plus",
        "xgrad-cam",
        "layer-cam",
        "hires-cam",
        "score-cam",
        "ablation-cam",
        "eigen-cam",
    ] {
        let a = read(&format!("x.{m}.npy"));
        assert_eq!(a.shape(), &[1, 32, 32], "{m}");
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)), "{m}");
    }
    assert_eq!(read("x.integrated-gradients.npy").shape(), &[1, 3, 32, 32]);
    assert_eq!(read("x.input-x-gradient.npy").shape(), &[1, 3, 32, 32]);
    // At one layer: the raw map at the layer.
    let j = run(&["--method", "eigen-cam,ablation-cam", "--layer", "layer3"]);
    assert_eq!(j["layers"]["eigen-cam"], "layer3");
    assert_eq!(read("x.ablation-cam.npy").shape(), &[1, 2, 2]);
    // Integrated gradients' options change the map; the same options repeat it.
    run(&[
        "--method",
        "integrated-gradients",
        "--ig-steps",
        "8",
        "--ig-method",
        "riemann_trapezoid",
        "--baseline",
        "0.25",
    ]);
    let ig = read("x.integrated-gradients.npy");
    run(&["--method", "integrated-gradients"]);
    assert_ne!(ig, read("x.integrated-gradients.npy"));
    // A noise tunnel is deterministic for a seed.
    let tunnel = |seed: &str| {
        run(&[
            "--method",
            "gradient,input-x-gradient",
            "--noise-tunnel",
            "vargrad",
            "--noise-samples",
            "3",
            "--noise-std",
            "0.1",
            "--seed",
            seed,
        ]);
        read("x.input-x-gradient.npy")
    };
    let a = tunnel("5");
    assert_eq!(a.shape(), &[1, 3, 32, 32]);
    assert_eq!(a, tunnel("5"));
    assert_ne!(a, tunnel("6"));
    // Per-channel Grad-CAM: one map per channel of the layer, no sum.
    run(&["--method", "grad-cam", "--per-channel"]);
    assert_eq!(read("x.grad-cam.npy").shape(), &[1, 512, 1, 1]);
    // Guided Grad-CAM's upsampling.
    run(&[
        "--method",
        "guided-grad-cam",
        "--layer",
        "layer3",
        "--interpolate",
        "nearest",
    ]);
    let nearest = read("x.guided-grad-cam.npy");
    run(&["--method", "guided-grad-cam", "--layer", "layer3"]);
    assert_ne!(nearest, read("x.guided-grad-cam.npy"));
}

#[test]
fn baseline_options_are_checked() {
    let dir = tmp("baseline-errors");
    let w = weights().display().to_string();
    let out = dir.join("out");
    let (c, o) = (chelsea(), out.to_str().unwrap().to_string());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--arch",
            "resnet18",
            "--weights",
            &w,
            "--image",
            &c,
            "--size",
            "32",
            "--out",
            &o,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        attrib(&args)
    };
    for (extra, needle) in [
        (
            &["--method", "nope"][..],
            "unknown `nope`; valid: gradient, saliency",
        ),
        (
            &["--method", "integrated-gradients", "--ig-method", "simpson"][..],
            "unknown `simpson`; valid: gausslegendre, riemann_left",
        ),
        (
            &["--method", "integrated-gradients", "--ig-steps", "0"][..],
            "gausslegendre needs at least 1 step, got 0",
        ),
        (
            &["--method", "grad-cam", "--noise-tunnel", "smoothgrad"][..],
            "--noise-tunnel: applies to the input-space methods",
        ),
        (
            &[
                "--method",
                "gradient",
                "--noise-tunnel",
                "smoothgrad-squared",
            ][..],
            "unknown `smoothgrad-squared`; valid: smoothgrad, smoothgrad-sq, vargrad",
        ),
        (
            &[
                "--method",
                "gradient",
                "--noise-tunnel",
                "smoothgrad",
                "--noise-std",
                "-1",
            ][..],
            "noise std: -1 is not a finite, non-negative number",
        ),
        (
            &[
                "--method",
                "gradient",
                "--noise-tunnel",
                "vargrad",
                "--noise-samples",
                "0",
            ][..],
            "noise samples: must be positive",
        ),
        (
            &["--method", "grad-cam", "--per-channel"][..],
            "add --npy to write them",
        ),
        (
            &[
                "--method",
                "guided-grad-cam",
                "--layer",
                "layer3",
                "--layer",
                "layer4",
            ][..],
            "guided-grad-cam takes one layer, not 2",
        ),
        (
            &["--method", "guided-grad-cam", "--interpolate", "cubic"][..],
            "unknown `cubic`; valid: bilinear, nearest",
        ),
    ] {
        fails_with(run(extra), needle);
        assert!(empty(&out), "{extra:?} left files");
    }
}
