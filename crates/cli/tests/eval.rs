//! `attrib eval` end to end on the bundled annotated set (assets/eval) with a
//! synthetic ResNet-18: the records agree with the metrics' definitions, three
//! shards merged give the single run's summary byte for byte, a killed run resumes,
//! and the errors a user can provoke are one line each.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use common::{attrib, fails_with, root, tmp};

use attrib_dfdx::Arch;
use serde_json::Value;

/// ResNet-18 with synthetic weights and 10 classes, and a class map onto them.
fn setup() -> &'static (PathBuf, PathBuf) {
    static S: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    S.get_or_init(|| {
        let d = tmp("setup");
        let w = d.join("resnet18.safetensors");
        Arch::Resnet18
            .synthetic_weights(0, 10)
            .unwrap()
            .save_safetensors(&w)
            .unwrap();
        let c = d.join("classes.json");
        std::fs::write(&c, r#"{"cat": [1, 2], "coffee": 3, "quokka": [4]}"#).unwrap();
        (w, c)
    })
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `attrib eval` of ResNet-18 `weights` on the bundled images with `annotations`,
/// quiet, into `out`, with `extra` arguments.
fn eval_on(weights: &Path, annotations: &Path, out: &Path, extra: &[&str]) -> Output {
    let assets = root().join("assets");
    let mut args = vec![
        "eval",
        "--arch",
        "resnet18",
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        assets.to_str().unwrap(),
        "--annotations",
        annotations.to_str().unwrap(),
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    attrib(&args)
}

/// `attrib eval` on the bundled set, small and fast, with `extra` arguments.
fn eval(out: &Path, extra: &[&str]) -> Output {
    let (w, c) = setup();
    let mut args = vec![
        "--classes",
        c.to_str().unwrap(),
        "--size",
        "64",
        "--method",
        "grad-cam,saliency",
        "--metric",
        "all",
        "--sanity-layers",
        "fc,layer4",
        "--randomisation",
        "both",
        "--curve-steps",
        "8",
        "--resamples",
        "200",
        "--examples",
        "1",
    ];
    args.extend_from_slice(extra);
    eval_on(w, &root().join("assets/eval/annotations"), out, &args)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn records(dir: &Path) -> Vec<Value> {
    let mut r: Vec<Value> = read(&dir.join("records.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    r.sort_by_key(|v| (v["image"].to_string(), v["method"].to_string()));
    r
}

const OUTPUTS: [&str; 5] = [
    "summary.md",
    "summary.csv",
    "curves.svg",
    "sanity.svg",
    "records.jsonl",
];

fn iou(a: [u64; 4], b: [u64; 4]) -> f64 {
    let w = (a[2].min(b[2]) + 1).saturating_sub(a[0].max(b[0]));
    let h = (a[3].min(b[3]) + 1).saturating_sub(a[1].max(b[1]));
    let area = |r: [u64; 4]| (r[2] - r[0] + 1) * (r[3] - r[1] + 1);
    let i = (w * h) as f64;
    i / ((area(a) + area(b)) as f64 - i)
}

fn corners(v: &Value) -> [u64; 4] {
    let a: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    [a[0], a[1], a[2], a[3]]
}

#[test]
fn records_follow_the_definitions_and_shards_merge_to_the_same_summary() {
    let single = tmp("single");
    let table = ok(eval(&single, &[]));
    assert!(
        table.contains("| grad-cam |") && table.contains("| saliency |"),
        "{table}"
    );
    let recs = records(&single);
    assert_eq!(recs.len(), 8, "4 images x 2 methods");
    let classes = |label: &str| -> Vec<u64> {
        match label {
            "cat" => vec![1, 2],
            "coffee" => vec![3],
            _ => vec![4],
        }
    };
    for r in &recs {
        let labels = r["labels"].as_array().unwrap();
        let found = r["found"].as_array().unwrap();
        assert_eq!(found.len(), 5, "top-5 boxes");
        for (f, t) in found.iter().zip(r["top5"].as_array().unwrap()) {
            assert_eq!(f["class"], t["class"]);
        }
        for l in labels {
            let label = l["label"].as_str().unwrap();
            let cs = classes(label);
            // The explained class is the most probable of the label's classes.
            assert!(cs.contains(&l["class"].as_u64().unwrap()));
            let gt: Vec<[u64; 4]> = l["boxes"].as_array().unwrap().iter().map(corners).collect();
            // ILSVRC's rule, recomputed: an error unless one of the first k found
            // boxes is of the label's classes with IoU >= 0.5.
            for (k, key) in [(1, "top1_error"), (5, "top5_error")] {
                let hit = found[..k].iter().any(|f| {
                    cs.contains(&f["class"].as_u64().unwrap())
                        && !f["box"].is_null()
                        && gt.iter().any(|g| iou(corners(&f["box"]), *g) >= 0.5)
                });
                assert_eq!(l[key].as_bool().unwrap(), !hit, "{label} {key}");
            }
            // TorchRay's hit: a box pixel within 15 px of the point.
            let p = corners(&Value::Array(vec![
                l["point"][0].clone(),
                l["point"][1].clone(),
                l["point"][0].clone(),
                l["point"][1].clone(),
            ]));
            let near = gt.iter().any(|g| {
                let dx = p[0].clamp(g[0], g[2]) as f64 - p[0] as f64;
                let dy = p[1].clamp(g[1], g[3]) as f64 - p[1] as f64;
                dx * dx + dy * dy < 225.0
            });
            assert_eq!(l["hit"].as_bool().unwrap(), near);
            for game in ["deletion", "insertion"] {
                let curve = l[game]["curve"].as_array().unwrap();
                assert_eq!(curve.len(), 9, "8 steps and the start");
                let auc = l[game]["auc"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&auc));
            }
            let rho = l["faithfulness"].as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&rho));
        }
        let s = &r["sanity"];
        assert_eq!(s["cascading"].as_array().unwrap().len(), 2);
        assert_eq!(
            s["cascading"][1]["layers"],
            serde_json::json!(["fc", "layer4"])
        );
        assert_eq!(s["independent"][1]["layers"], serde_json::json!(["layer4"]));
    }
    // The composite holds a cat (half the image) and a cup (under a quarter, with
    // another class present: the difficult subset).
    let comp = recs
        .iter()
        .find(|r| r["image"] == "eval/cat-and-coffee.jpg")
        .unwrap();
    let labels = comp["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 2);
    assert_eq!(labels[0]["label"], "cat");
    assert_eq!(labels[0]["difficult"], false);
    assert_eq!(labels[1]["difficult"], true);
    assert_eq!(labels[1]["boxes"], serde_json::json!([[357, 14, 545, 242]]));
    // Examples for the first image only (--examples 1), one per label and method.
    let ex: Vec<_> = std::fs::read_dir(single.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(ex.len(), 2, "{ex:?}");
    assert!(ex.contains(&"chelsea.cat.grad-cam.png".to_string()));

    let shards: Vec<PathBuf> = (0..3).map(|k| tmp(&format!("shard{k}"))).collect();
    for (k, d) in shards.iter().enumerate() {
        ok(eval(d, &["--shard", &format!("{k}/3")]));
    }
    assert_eq!(records(&shards[0]).len(), 4, "images 0 and 3");
    let merged = tmp("merged");
    let mut args = vec!["eval", "merge"];
    args.extend(shards.iter().map(|d| d.to_str().unwrap()));
    args.extend(["--out", merged.to_str().unwrap()]);
    let printed = ok(attrib(&args));
    assert_eq!(printed, table);
    for f in OUTPUTS {
        let (a, b) = (read(&single.join(f)), read(&merged.join(f)));
        if f == "records.jsonl" {
            assert_eq!(records(&single), records(&merged));
        } else {
            assert_eq!(a, b, "{f} differs");
        }
    }
    assert!(merged.join("examples/chelsea.cat.saliency.png").exists());

    // A run killed mid-write: two images' records and a torn line. The rerun cuts
    // the torn line, does the rest, and gives the same summary.
    let resumed = tmp("resumed");
    std::fs::copy(single.join("config.json"), resumed.join("config.json")).unwrap();
    let text = read(&single.join("records.jsonl"));
    let lines: Vec<&str> = text.lines().collect();
    let partial = format!(
        "{}\n{}\n{}",
        lines[0],
        lines[1],
        &lines[2][..lines[2].len() / 2]
    );
    std::fs::write(resumed.join("records.jsonl"), partial).unwrap();
    ok(eval(&resumed, &[]));
    assert_eq!(records(&resumed), records(&single));
    assert_eq!(
        read(&resumed.join("summary.md")),
        read(&single.join("summary.md"))
    );
    // Other settings into the same folder: refused.
    fails_with(
        eval(&resumed, &["--threshold", "0.2"]),
        "holds a run with other settings (`threshold`",
    );
    // A limited run stops before the summary.
    let limited = tmp("limited");
    let out = eval(&limited, &["--limit", "1"]);
    assert!(out.status.success());
    assert_eq!(records(&limited).len(), 2);
    assert!(!limited.join("summary.md").exists());
}

#[test]
fn eval_errors_are_one_line() {
    let out = tmp("errors");
    fails_with(eval(&out, &["--shard", "3/3"]), "--shard");
    fails_with(eval(&out, &["--metric", "accuracy"]), "unknown `accuracy`");
    fails_with(
        eval(&out, &["--deletion-substrate", "noise"]),
        "unknown `noise`",
    );
    // A label the class map lacks, named with its image.
    let d = tmp("unknown-label");
    std::fs::write(
        d.join("a.xml"),
        "<annotation><filename>chelsea.png</filename><size><width>451</width><height>300</height></size>\
         <object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>",
    )
    .unwrap();
    let (w, c) = setup();
    let base = |ann: &Path, extra: &[&str]| {
        let mut args = vec!["--classes", c.to_str().unwrap(), "--size", "32"];
        args.extend_from_slice(extra);
        eval_on(w, ann, &out, &args)
    };
    let bundled = root().join("assets/eval/annotations");
    fails_with(
        base(
            &bundled,
            &["--metric", "sanity", "--sanity-layers", "fc,layer9"],
        ),
        "layer9",
    );
    fails_with(base(&d, &[]), "the label `dog` is not in it");
    // An annotation whose size is not the image's.
    std::fs::write(
        d.join("a.xml"),
        "<annotation><filename>chelsea.png</filename><size><width>450</width><height>300</height></size>\
         <object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>",
    )
    .unwrap();
    fails_with(base(&d, &[]), "is 451x300; its annotation says 450x300");
    // An image outside the data folder.
    std::fs::write(
        d.join("a.xml"),
        "<annotation><filename>../etc/passwd</filename><size><width>450</width><height>300</height></size></annotation>",
    )
    .unwrap();
    fails_with(base(&d, &[]), "not a relative path inside the data folder");
}

/// The same boxes as COCO JSON give the same records as the VOC files; ILSVRC XML
/// with synset names needs no class map.
#[test]
fn coco_and_ilsvrc_annotations_give_the_same_records() {
    let (w, c) = setup();
    let assets = root().join("assets");
    let d = tmp("formats");
    // COCO's [x, y, w, h] of the VOC boxes (inclusive corners x0..=x1: w = x1 - x0 + 1).
    let coco = r#"{
        "images": [{"id": 1, "file_name": "chelsea.png", "width": 451, "height": 300},
                   {"id": 2, "file_name": "eval/cat-and-coffee.jpg", "width": 600, "height": 300}],
        "categories": [{"id": 17, "name": "cat"}, {"id": 3, "name": "coffee"}],
        "annotations": [
            {"image_id": 1, "category_id": 17, "bbox": [0, 0, 396, 300]},
            {"image_id": 2, "category_id": 17, "bbox": [0, 0, 300, 300]},
            {"image_id": 2, "category_id": 3, "bbox": [357, 14, 189, 229]}
        ]}"#;
    std::fs::write(d.join("coco.json"), coco).unwrap();
    let run = |ann: &Path, out: &Path, classes: Option<&Path>, weights: &Path| {
        let mut args = vec![
            "--size",
            "48",
            "--metric",
            "localisation,pointing",
            "--examples",
            "0",
        ];
        if let Some(c) = classes {
            args.extend(["--classes", c.to_str().unwrap()]);
        }
        ok(eval_on(weights, ann, out, &args));
        records(out)
    };
    let from_coco = run(&d.join("coco.json"), &d.join("coco-out"), Some(c), w);
    // The VOC files of the same two images.
    let voc = d.join("voc");
    std::fs::create_dir_all(&voc).unwrap();
    for f in ["chelsea.xml", "cat-and-coffee.xml"] {
        std::fs::copy(assets.join("eval/annotations").join(f), voc.join(f)).unwrap();
    }
    let from_voc = run(&voc, &d.join("voc-out"), Some(c), w);
    assert_eq!(from_coco, from_voc);
    assert_eq!(from_coco.len(), 2);

    // ILSVRC: synset names, 0-based corners, no --classes (the shipped map); a
    // 1000-class network.
    let w1000 = d.join("resnet18-1000.safetensors");
    Arch::Resnet18
        .synthetic_weights(1, 1000)
        .unwrap()
        .save_safetensors(&w1000)
        .unwrap();
    let ilsvrc = d.join("ilsvrc");
    std::fs::create_dir_all(&ilsvrc).unwrap();
    std::fs::write(
        ilsvrc.join("chelsea.xml"),
        "<annotation><filename>chelsea.png</filename><size><width>451</width><height>300</height></size>\
         <object><name>n02124075</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>395</xmax><ymax>299</ymax></bndbox></object></annotation>",
    )
    .unwrap();
    let recs = run(&ilsvrc, &d.join("ilsvrc-out"), None, &w1000);
    let l = &recs[0]["labels"][0];
    assert_eq!(l["label"], "n02124075");
    assert_eq!(l["class"], 285, "Egyptian cat in torchvision's order");
    assert_eq!(l["boxes"], serde_json::json!([[0, 0, 395, 299]]));
}
