//! `attrib demo`: the paper's figures on real inputs, one HTML page per model family:
//! an ImageNet classifier (the pretrained EfficientNet-Lite0), the captioner, the VQA
//! model and the dense captioner trained by `tools/reference` (bundled).

use std::path::PathBuf;

use attrib_core::{Error, Model, Result, Target};
use attrib_dfdx::zoo::densecap::{DenseCap, Proposals};
use attrib_dfdx::zoo::show_and_tell::ShowAndTell;
use attrib_dfdx::zoo::text::Vocab;
use attrib_dfdx::zoo::vqa::Vqa;
use attrib_dfdx::{imagenet, Arch, Network, WeightMap};
use attrib_viz::{render, Colormap, Panel};
use clap::Args;
use image::RgbImage;
use ndarray::Axis;
use serde_json::{json, Value};

use crate::caption::{self, CaptionOptions};
use crate::dense_caption::{self, DenseCaptionOptions};
use crate::explain::{parse_colormap, row_title};
use crate::inputs::{self, Batch};
use crate::methods::{attribute, progress_bar, render as render_map, Method, Settings};
use crate::outputs::Outputs;
use crate::vqa::{self, VqaOptions};

/// Arguments of `attrib demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// Cache folder for the weights (default: $ATTRIB_CACHE or ./.cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Colormap for heat maps.
    #[arg(long, default_value = "jet")]
    pub colormap: String,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The gallery's photos and the classes each is explained for: groups of ImageNet
/// classes, each explained for its most probable member; none: the top-2 classes.
/// The gallery opens with two objects of different classes in one image, each
/// explained (the paper's Figure 1: the maps are class-discriminative).
type Photo = (&'static str, &'static [u8], &'static [&'static [usize]]);

const PHOTOS: [Photo; 3] = [
    (
        "cat-and-coffee",
        include_bytes!("../../../assets/eval/cat-and-coffee.jpg"),
        // ImageNet's domestic cats; espresso and cup.
        &[&[281, 282, 283, 284, 285], &[967, 968]],
    ),
    (
        "chelsea",
        include_bytes!("../../../assets/chelsea.png"),
        &[],
    ),
    ("coffee", include_bytes!("../../../assets/coffee.png"), &[]),
];

pub fn demo(args: DemoArgs) -> Result<()> {
    let colormap = parse_colormap(&args.colormap)?;
    let mut out = Outputs::default();
    let photos = lite0_page(&args, colormap, &mut out)?;
    let captions = caption_page(&args, colormap, &mut out)?;
    let answers = vqa_page(&args, colormap, &mut out)?;
    let regions = densecap_page(&args, colormap, &mut out)?;
    out.commit(&args.out)?;
    println!(
        "{}",
        json!({"out": args.out.display().to_string(), "photos": photos, "captions": captions, "vqa": answers, "dense_captions": regions})
    );
    if !args.quiet {
        eprintln!(
            "open {} in a browser",
            args.out.join("index.html").display()
        );
    }
    Ok(())
}

/// The classifier page (`index.html`): every method on the bundled photos with the
/// pretrained EfficientNet-Lite0, top-2 classes.
fn lite0_page(args: &DemoArgs, colormap: Colormap, out: &mut Outputs) -> Result<Value> {
    let weights = crate::fetch::lite0(&crate::fetch::cache_dir(args.cache.clone()), args.quiet)?;
    let net: Network<f32> = Arch::EfficientnetLite0.load(&weights)?;
    let methods: Vec<Method> = attrib_methods::registry::BUILT_IN
        .iter()
        .filter(|e| e.groups.contains(&"all"))
        .map(|e| Method::builtin(e.name))
        .collect();
    let settings = Settings::new(32, 16);
    let mut html =
        page_head("attrib demo: EfficientNet-Lite0 (ImageNet), every method, top-2 classes");
    let mut summary = Vec::new();
    for (stem, bytes, groups) in PHOTOS {
        let img = attrib_io::image::decode_rgb8(bytes, stem, &attrib_io::Limits::default())?;
        let photo = imagenet::resize_rgb(&img, 224);
        let x1 = imagenet::normalize(&photo);
        let probs = inputs::softmax(&net.forward(x1.view())?);
        let top = inputs::top_k(&probs, 5).remove(0);
        let classes: [usize; 2] = match groups {
            [a, b] => {
                let best = |g: &[usize]| {
                    *g.iter()
                        .max_by(|&&x, &&y| probs[[0, x]].total_cmp(&probs[[0, y]]))
                        .expect("a non-empty group")
                };
                [best(a), best(b)]
            }
            _ => [top[0].0, top[1].0],
        };
        // One batch of the photo twice, one class per item: every method explains
        // both classes in one pass.
        let x = ndarray::concatenate(Axis(0), &[x1.view(), x1.view()])
            .map_err(|e| Error::Backend(e.to_string()))?;
        let target = Target::PerSample(classes.to_vec());
        let mut headers = vec!["original".to_string()];
        headers.extend(methods.iter().map(|m| m.name().to_string()));
        let mut panel = Panel::new((224, 224), headers.clone());
        let mut rows: Vec<Vec<RgbImage>> = vec![vec![render::to_image(photo.view())]; 2];
        let pb = progress_bar(args.quiet, methods.len() as u64, stem);
        for &m in &methods {
            pb.set_message(format!("{stem}: {}", m.name()));
            let map = attribute(&net, m, &x, &target, &settings, args.quiet)?;
            for (k, row) in rows.iter_mut().enumerate() {
                let tile = render_map(m, &map, k, &photo, colormap)?;
                // Top-k rows by rank, chosen classes by class index.
                let tag = if groups.is_empty() {
                    format!("top{}", k + 1)
                } else {
                    classes[k].to_string()
                };
                out.png(format!("{stem}.{tag}.{}.png", m.name()), tile.clone());
                row.push(tile);
            }
            pb.inc(1);
        }
        pb.finish_and_clear();
        // The paper's Figure 1 columns, at a smaller size for quick viewing.
        let figure1 = [
            "original",
            "guided-backprop",
            "grad-cam",
            "guided-grad-cam",
            "occlusion",
        ];
        let mut fig = Panel::new((160, 160), figure1.iter().map(|s| s.to_string()).collect());
        for (k, row) in rows.into_iter().enumerate() {
            let title = row_title(Some(classes[k]), probs[[0, classes[k]]]);
            let pick: Vec<RgbImage> = figure1
                .iter()
                .map(|h| {
                    row[headers
                        .iter()
                        .position(|x| x == h)
                        .expect("every method runs")]
                    .clone()
                })
                .collect();
            fig.row(title.clone(), pick);
            panel.row(title, row);
        }
        out.png(format!("{stem}.figure1.png"), fig.render());
        out.png(format!("{stem}.panel.png"), panel.render());
        html.push_str(&format!(
            "<h2>{stem}</h2>\n<p>{}top-5: {}</p>\n<img src=\"{stem}.figure1.png\"><br>\n<img src=\"{stem}.panel.png\">\n",
            if groups.is_empty() {
                String::new()
            } else {
                "Two objects of different classes, each row explaining one of them. ".to_string()
            },
            top_text(&top)
        ));
        summary.push(json!({"photo": stem, "top5": inputs::top_json(&top), "explained": classes, "panel": args.out.join(format!("{stem}.panel.png")).display().to_string()}));
    }
    html.push_str("<p>First the paper's Figure 1 layout, then every method. Rows are the classes explained: the cat and the cup in the composite of the two photos (assets/eval), the top-2 classes in the others. Grad-CAM, CAM and occlusion are overlaid on the photo (jet: red is high); gradient, deconvnet, guided backprop and Guided Grad-CAM use the paper's image normalisation.</p>\n<p>Also: <a href=\"caption.html\">captioning</a> (a CNN+LSTM captioner, word by word), <a href=\"vqa.html\">visual question answering</a> and <a href=\"densecap.html\">dense captioning</a> (region by region).</p>\n</body></html>\n");
    out.text("index.html".into(), html);
    Ok(Value::Array(summary))
}

pub(crate) fn top_text(top: &[(usize, f32)]) -> String {
    top.iter()
        .map(|&(c, p)| format!("{} ({c}) {:.1}%", imagenet::class_name(c), p * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn page_head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>body{{font-family:sans-serif;margin:2em}}img{{max-width:100%}}td{{text-align:center;font-size:small}}</style></head><body>\n<h1>{title}</h1>\n"
    )
}

/// Bundled images as a batch: decoded, resized to `size`, normalised.
fn bundled_batch(images: &[(&str, &[u8])], size: usize) -> Result<Batch> {
    let mut items = Vec::new();
    let mut photos = Vec::new();
    let mut original = Vec::new();
    for (stem, bytes) in images {
        let img = attrib_io::image::decode_rgb8(bytes, stem, &attrib_io::Limits::default())?;
        original.push((img.width() as usize, img.height() as usize));
        let photo = imagenet::resize_rgb(&img, size);
        items.push(imagenet::normalize(&photo));
        photos.push(photo);
    }
    let views: Vec<_> = items.iter().map(|a| a.view()).collect();
    let x = ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Backend(e.to_string()))?;
    let stems: Vec<String> = images.iter().map(|(s, _)| s.to_string()).collect();
    Ok(Batch {
        x,
        file_stems: stems.clone(),
        stems,
        photos,
        original,
    })
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim().to_string()).collect()
}

const CAPTIONER: [&[u8]; 3] = [
    include_bytes!("../../../assets/models/captioner/encoder.pth"),
    include_bytes!("../../../assets/models/captioner/decoder.pth"),
    include_bytes!("../../../assets/models/captioner/vocab.txt"),
];

const SCENES: [(&str, &[u8]); 3] = [
    (
        "caption-scene000",
        include_bytes!("../../../fixtures/pointing/captions/scene000.png"),
    ),
    (
        "caption-scene002",
        include_bytes!("../../../fixtures/pointing/captions/scene002.png"),
    ),
    (
        "caption-scene004",
        include_bytes!("../../../fixtures/pointing/captions/scene004.png"),
    ),
];

/// The captioning page (`caption.html`): the captioner's own captions of held-out
/// scenes, each word and the whole caption explained with Grad-CAM and Guided
/// Grad-CAM (the paper's Fig. 5 layout: one column per word).
fn caption_page(args: &DemoArgs, colormap: Colormap, out: &mut Outputs) -> Result<Value> {
    let model = ShowAndTell::<f32>::from_weights(
        WeightMap::from_bytes(CAPTIONER[0])?,
        WeightMap::from_bytes(CAPTIONER[1])?,
    )?;
    let vocab = Vocab::new(lines(
        std::str::from_utf8(CAPTIONER[2]).map_err(|e| Error::Backend(e.to_string()))?,
    ))?;
    let batch = bundled_batch(&SCENES, 96)?;
    let opts = CaptionOptions {
        caption: None,
        beam: 1,
        max_words: 20,
        words: Vec::new(),
        methods: vec![
            Method::builtin("grad-cam"),
            Method::builtin("guided-grad-cam"),
        ],
        settings: Settings::new(16, 8),
        colormap,
        npy: false,
        quiet: args.quiet,
    };
    let summary = caption::run(
        &model,
        &model.encoder,
        &vocab,
        &batch,
        &opts,
        out,
        &args.out,
    )?;
    let mut html = page_head("attrib demo: explaining a captioner (CNN+LSTM) word by word");
    html.push_str("<p>Show and Tell (the PyTorch tutorial's encoder/decoder layout) trained by <code>tools/reference/train_captioner.py</code> on synthetic scenes of two shapes; held-out scenes. Each column explains one word of the model's own caption (the gradient of its log-probability), the last the whole caption. Grad-CAM at the trunk's last rectified map, and Guided Grad-CAM.</p>\n");
    for item in summary["items"].as_array().into_iter().flatten() {
        let stem = item["input"].as_str().unwrap_or_default();
        html.push_str(&format!(
            "<h2>&ldquo;{}&rdquo;</h2>\n<img src=\"{stem}.panel.png\">\n",
            item["caption"].as_str().unwrap_or_default()
        ));
    }
    html.push_str("<p><a href=\"index.html\">classifier</a> &middot; <a href=\"vqa.html\">VQA</a> &middot; <a href=\"densecap.html\">dense captioning</a></p>\n</body></html>\n");
    out.text("caption.html".into(), html);
    Ok(summary)
}

const VQA: [&[u8]; 3] = [
    include_bytes!("../../../assets/models/vqa/vqa.pth"),
    include_bytes!("../../../assets/models/vqa/questions.txt"),
    include_bytes!("../../../assets/models/vqa/answers.txt"),
];

/// The VQA page (`vqa.html`): two questions about held-out easy-vqa images, the
/// answer explained with Grad-CAM and Guided Grad-CAM.
fn vqa_page(args: &DemoArgs, colormap: Colormap, out: &mut Outputs) -> Result<Value> {
    let model = Vqa::<f32>::from_weights(WeightMap::from_bytes(VQA[0])?)?;
    let text = |b: &[u8]| -> Result<Vec<String>> {
        Ok(lines(
            std::str::from_utf8(b).map_err(|e| Error::Backend(e.to_string()))?,
        ))
    };
    let vocab = Vocab::new(text(VQA[1])?)?;
    let answers = text(VQA[2])?;
    let mut html = page_head("attrib demo: explaining a VQA model's answers");
    html.push_str("<p>The &ldquo;deeper LSTM Q + norm I&rdquo; baseline (Antol, Agrawal et al.) trained by <code>tools/reference/train_vqa.py</code> on easy-vqa; held-out images. Each panel explains the model's answer (its score before softmax) to the question.</p>\n");
    let mut all = Vec::new();
    for (tag, question) in [
        ("shape", "what shape is in the image?"),
        ("color", "what color is the shape?"),
    ] {
        let images: Vec<(String, &[u8])> = VQA_IMAGES
            .iter()
            .map(|(s, b)| (format!("vqa-{tag}-{s}"), *b))
            .collect();
        let named: Vec<(&str, &[u8])> = images.iter().map(|(s, b)| (s.as_str(), *b)).collect();
        let batch = bundled_batch(&named, 64)?;
        let opts = VqaOptions {
            question: question.into(),
            answer: "top1".into(),
            topk: 3,
            methods: vec![
                Method::builtin("grad-cam"),
                Method::builtin("guided-grad-cam"),
            ],
            settings: Settings::new(8, 4),
            colormap,
            npy: false,
            quiet: args.quiet,
        };
        let summary = vqa::run(
            &model, &model.cnn, &vocab, &answers, &batch, &opts, out, &args.out,
        )?;
        html.push_str(&format!("<h2>{question}</h2>\n"));
        for item in summary["items"].as_array().into_iter().flatten() {
            html.push_str(&format!(
                "<img src=\"{}.panel.png\"> ",
                item["input"].as_str().unwrap_or_default()
            ));
        }
        all.push(summary);
    }
    html.push_str("<p><a href=\"index.html\">classifier</a> &middot; <a href=\"caption.html\">captioning</a> &middot; <a href=\"densecap.html\">dense captioning</a></p>\n</body></html>\n");
    out.text("vqa.html".into(), html);
    Ok(Value::Array(all))
}

const VQA_IMAGES: [(&str, &[u8]); 3] = [
    ("0", include_bytes!("../../../fixtures/pointing/vqa/0.png")),
    ("1", include_bytes!("../../../fixtures/pointing/vqa/1.png")),
    ("4", include_bytes!("../../../fixtures/pointing/vqa/4.png")),
];

const DENSECAP: [&[u8]; 2] = [
    include_bytes!("../../../assets/models/densecap/densecap.safetensors"),
    include_bytes!("../../../assets/models/densecap/vocab.txt"),
];

const DENSECAP_SCENES: [(&str, &[u8]); 2] = [
    (
        "densecap-000",
        include_bytes!("../../../fixtures/densecap/heldout/000.png"),
    ),
    (
        "densecap-001",
        include_bytes!("../../../fixtures/densecap/heldout/001.png"),
    ),
];

/// The dense-captioning page (`densecap.html`): the FCLN's own regions of held-out
/// scenes, captioned (the DenseCap figure), and each region's caption explained with
/// Grad-CAM and Guided Grad-CAM (the Grad-CAM paper's dense-captioning figure).
fn densecap_page(args: &DemoArgs, colormap: Colormap, out: &mut Outputs) -> Result<Value> {
    let model = DenseCap::<f32>::from_weights(WeightMap::from_bytes(DENSECAP[0])?)?;
    let vocab = Vocab::new(lines(
        std::str::from_utf8(DENSECAP[1]).map_err(|e| Error::Backend(e.to_string()))?,
    ))?;
    let batch = bundled_batch(&DENSECAP_SCENES, 96)?;
    let opts = DenseCaptionOptions {
        boxes: Vec::new(),
        proposals: Vec::new(),
        regions: 4,
        how: Proposals {
            top: 4,
            ..Proposals::default()
        },
        caption: None,
        beam: 1,
        max_words: 12,
        words: Vec::new(),
        methods: vec![
            Method::builtin("grad-cam"),
            Method::builtin("guided-grad-cam"),
        ],
        settings: Settings::new(16, 8),
        colormap,
        npy: false,
        quiet: args.quiet,
    };
    let summary = dense_caption::run(&model, &model.trunk, &vocab, &batch, &opts, out, &args.out)?;
    let mut html = page_head("attrib demo: explaining a dense captioner (FCLN) region by region");
    html.push_str("<p>DenseCap's Fully Convolutional Localization Network (Johnson, Karpathy &amp; Fei-Fei) at small scale, trained by <code>tools/reference/densecap.py</code> on synthetic scenes of captioned shapes; held-out scenes. First the model's four best proposals with their captions, then each region's caption explained (the gradient of its log-probability, the box a constant) with Grad-CAM at the trunk's last rectified map and Guided Grad-CAM. The trunk runs once per scene for all its regions' Grad-CAMs.</p>\n");
    for item in summary["items"].as_array().into_iter().flatten() {
        let stem = item["input"].as_str().unwrap_or_default();
        html.push_str(&format!(
            "<h2>{stem}</h2>\n<img src=\"{stem}.regions.png\"><br>\n"
        ));
        for r in item["regions"].as_array().into_iter().flatten() {
            html.push_str(&format!(
                "<img src=\"{stem}.{}.panel.png\"> ",
                r["region"].as_str().unwrap_or_default()
            ));
        }
        html.push('\n');
    }
    html.push_str("<p><a href=\"index.html\">classifier</a> &middot; <a href=\"caption.html\">captioning</a> &middot; <a href=\"vqa.html\">VQA</a></p>\n</body></html>\n");
    out.text("densecap.html".into(), html);
    Ok(summary)
}
