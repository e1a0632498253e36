//! `attrib vqa`: explains a VQA model's answer to a question about each image.

use std::path::PathBuf;

use attrib_core::{Error, Model, Result, Target};
use attrib_dfdx::zoo::text::Vocab;
use attrib_dfdx::zoo::vqa::Vqa;
use attrib_dfdx::{Cpu, Executor};
use attrib_viz::{render as viz, Colormap, Panel};
use clap::Args;
use ndarray::Axis;
use serde_json::{json, Value};

use crate::explain;
use crate::inputs::{self, Batch};
use crate::methods::{self, parse_methods, Method, MethodArgs, Settings};
use crate::outputs::Outputs;

/// Arguments of `attrib vqa`.
#[derive(Debug, Args)]
pub struct VqaArgs {
    /// Architecture: vqa (the "deeper LSTM Q + norm I" model of tools/reference).
    #[arg(long, default_value = "vqa")]
    pub arch: String,
    /// Weights (safetensors or .pth).
    #[arg(long)]
    pub weights: PathBuf,
    /// Question vocabulary: one token per line, in index order.
    #[arg(long)]
    pub questions: PathBuf,
    /// Answers: one per line, in the order of the model's outputs.
    #[arg(long)]
    pub answers: PathBuf,
    /// Images (PNG or JPEG), resized to --size and normalised with ImageNet mean/std.
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// Image side after resizing (1 to 4096).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// The question, asked of every image.
    #[arg(long)]
    pub question: String,
    /// The answer to explain: top1 (each image's own) or one of the answers.
    #[arg(long, default_value = "top1")]
    pub answer: String,
    /// How many answers to list.
    #[arg(long, default_value_t = 5)]
    pub topk: usize,
    /// Methods (as for explain; the groups all, cams and gradients leave out CAM,
    /// which needs a GAP + linear head). Repeatable.
    #[arg(long = "method", default_value = "grad-cam")]
    pub methods: Vec<String>,
    #[command(flatten)]
    pub options: MethodArgs,
    /// Output folder.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Also write the raw maps as <stem>.<method>.npy.
    #[arg(long)]
    pub npy: bool,
    /// Colormap for heat maps.
    #[arg(long, default_value = "jet")]
    pub colormap: String,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Where the CNN runs: cpu, or cuda (GPU 0; needs a build with `--features cuda`).
    /// The LSTM, embedding and RoI part stays on the CPU.
    #[arg(long, value_enum, default_value_t = inputs::Device::Cpu)]
    pub device: inputs::Device,
}

/// The answer list: one per line.
pub fn load_answers(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let answers: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if answers.is_empty() || answers.iter().any(String::is_empty) {
        return Err(Error::Io {
            path: path.display().to_string(),
            reason: "an answer list has one non-empty answer per line".into(),
        });
    }
    Ok(answers)
}

/// What to ask and explain, beyond the model and the images.
pub struct VqaOptions {
    /// The question, asked of every image.
    pub question: String,
    /// `top1` or an answer.
    pub answer: String,
    /// Answers listed.
    pub topk: usize,
    /// Methods.
    pub methods: Vec<Method>,
    /// Layer and occlusion settings.
    pub settings: Settings,
    /// Heat-map colormap.
    pub colormap: Colormap,
    /// Write raw maps too.
    pub npy: bool,
    /// No progress bars.
    pub quiet: bool,
}

pub fn vqa(args: VqaArgs) -> Result<()> {
    inputs::check_arch(&args.arch, "vqa")?;
    let opts = VqaOptions {
        question: args.question.clone(),
        answer: args.answer.clone(),
        topk: args.topk,
        methods: parse_methods(&args.methods, false)?,
        settings: Settings::from_args(&args.options, 8, 4)?,
        colormap: explain::parse_colormap(&args.colormap)?,
        npy: args.npy,
        quiet: args.quiet,
    };
    let model: Vqa<f32> = Vqa::load(&args.weights)?;
    let vocab = Vocab::load(&args.questions)?;
    let answers = load_answers(&args.answers)?;
    let source = inputs::Source {
        arch: args.arch.clone(),
        weights: args.weights.clone(),
        image: args.image.clone(),
        input: None,
        size: args.size,
    };
    let batch = inputs::load_batch(&source, 3)?;
    let mut out = Outputs::default();
    let trunk = args.device.open()?.trunk(&model.cnn)?;
    let summary = run(
        &model, &trunk, &vocab, &answers, &batch, &opts, &mut out, &args.out,
    )?;
    out.commit(&args.out)?;
    let unknown: Vec<&str> = summary["unknown"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !unknown.is_empty() {
        eprintln!(
            "warning: words not in the question vocabulary, read as <unk>: {}",
            unknown.join(", ")
        );
    }
    println!("{summary}");
    Ok(())
}

/// Answers `opts.question` for every image of `batch` and explains the answer,
/// staging the files in `out` (named as they will be in `out_dir`); returns the JSON
/// summary. The CNN runs on `trunk` (the model's own, or its copy on a GPU).
#[allow(clippy::too_many_arguments)]
pub fn run<N: Executor<f32, Cpu>>(
    model: &Vqa<f32>,
    trunk: &N,
    vocab: &Vocab,
    answers: &[String],
    batch: &Batch,
    opts: &VqaOptions,
    out: &mut Outputs,
    out_dir: &std::path::Path,
) -> Result<Value> {
    if vocab.len() != model.spec.vocab {
        return Err(Error::shape(
            "question vocabulary",
            format!(
                "{} tokens (the model's `embed.weight` rows)",
                model.spec.vocab
            ),
            format!("{} lines", vocab.len()),
        ));
    }
    if answers.len() != model.spec.answers {
        return Err(Error::shape(
            "answers",
            format!("{} (the model's `fc2.weight` rows)", model.spec.answers),
            format!("{} lines", answers.len()),
        ));
    }
    opts.settings.check(&opts.methods)?;
    for l in &opts.settings.layers {
        attrib_core::LayerTap::check_layer(&model.cnn, l)?;
    }
    let q = vocab.tokenize(&opts.question, "--question")?;
    let n = batch.stems.len();
    let conditioned = model.conditioned(&vec![q.ids.clone(); n])?.on(trunk);
    let scores = conditioned.forward(batch.x.view())?;
    let target = if opts.answer == "top1" {
        Target::TopPredicted
    } else {
        let c = answers
            .iter()
            .position(|a| *a == opts.answer)
            .ok_or_else(|| {
                Error::param(
                    "--answer",
                    format!(
                        "`{}` is not an answer; valid: top1, {}",
                        opts.answer,
                        answers.join(", ")
                    ),
                )
            })?;
        Target::Class(c)
    };
    let resolved = target.resolve(scores.view())?;
    let probs = inputs::softmax(&scores);
    let mut maps = Vec::with_capacity(opts.methods.len());
    let mut layers = serde_json::Map::new();
    for &m in &opts.methods {
        let map = methods::attribute(
            &conditioned,
            m,
            &batch.x,
            &target,
            &opts.settings,
            opts.quiet,
        )?;
        layers.insert(
            m.name().to_string(),
            methods::map_layer(m, &map, &opts.settings, &conditioned),
        );
        maps.push(map);
    }
    let mut items = Vec::with_capacity(n);
    for (i, stem) in batch.stems.iter().enumerate() {
        let mut files = Vec::new();
        let photo = &batch.photos[i];
        let mut tiles = vec![viz::to_image(photo.view())];
        for (&m, map) in opts.methods.iter().zip(&maps) {
            let tile = methods::render(m, map, i, photo, opts.colormap)?;
            let name = format!("{stem}.{}.png", m.name());
            out.png(name.clone(), tile.clone());
            files.push(name);
            tiles.push(tile);
            if opts.npy {
                let name = format!("{stem}.{}.npy", m.name());
                out.npy(
                    name.clone(),
                    map.values
                        .index_axis(Axis(0), i)
                        .insert_axis(Axis(0))
                        .to_owned(),
                );
                files.push(name);
            }
        }
        let class = resolved.classes[i].unwrap_or(0);
        let mut headers = vec!["original".to_string()];
        headers.extend(opts.methods.iter().map(|m| m.name().to_string()));
        let (h, w) = (photo.dim().1 as u32, photo.dim().2 as u32);
        // Small inputs (64 px) get larger tiles, so the labels fit.
        let mut panel = Panel::new((w.max(128), h.max(128)), headers);
        panel.row(
            format!("{} (p={:.2})", answers[class], probs[[i, class]]),
            tiles,
        );
        let name = format!("{stem}.panel.png");
        out.png(name.clone(), panel.render());
        files.push(name);
        let top: Vec<Value> = inputs::top_k(&probs, opts.topk.max(1))[i]
            .iter()
            .map(|&(c, p)| json!({"answer": answers[c], "index": c, "probability": p}))
            .collect();
        items.push(json!({
            "input": stem,
            "explained": {"answer": answers[class], "index": class},
            "top": top,
            "files": files.iter().map(|f| out_dir.join(f).display().to_string()).collect::<Vec<_>>(),
        }));
    }
    Ok(json!({
        "arch": "vqa",
        "question": opts.question,
        "tokens": q.words,
        "unknown": q.unknown,
        "methods": opts.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "layers": layers,
        "items": items,
    }))
}
