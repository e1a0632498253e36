//! `attrib caption`: explains a captioner's words and captions (Grad-CAM paper,
//! Sec. 7), with every method.

use std::path::PathBuf;

use attrib_core::{Error, Model, Result, Target};
use attrib_dfdx::zoo::show_and_tell::ShowAndTell;
use attrib_dfdx::zoo::text::Vocab;
use attrib_dfdx::{Cpu, Executor};
use attrib_viz::{render as viz, Colormap, Panel};
use clap::Args;
use ndarray::{s, Array2, Array4, Axis};
use serde_json::{json, Value};

use crate::explain;
use crate::inputs::{self, Batch};
use crate::methods::{self, parse_methods, Method, MethodArgs, Settings};
use crate::outputs::Outputs;

/// Arguments of `attrib caption`.
#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// Architecture: show-and-tell.
    #[arg(long, default_value = "show-and-tell")]
    pub arch: String,
    /// Encoder weights (safetensors or .pth; the tutorial's EncoderCNN state dict).
    #[arg(long)]
    pub encoder: PathBuf,
    /// Decoder weights (the tutorial's DecoderRNN state dict).
    #[arg(long)]
    pub decoder: PathBuf,
    /// Vocabulary: one token per line, in index order.
    #[arg(long)]
    pub vocab: PathBuf,
    /// Images (PNG or JPEG), resized to --size and normalised with ImageNet mean/std.
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// Image side after resizing (1 to 4096).
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// The caption to explain (for every image); without it, the model's own.
    #[arg(long)]
    pub caption: Option<String>,
    /// Beam width for generating captions (1: greedy, as the tutorial's sample).
    #[arg(long, default_value_t = 1)]
    pub beam: usize,
    /// Longest generated caption, in words.
    #[arg(long, default_value_t = 20)]
    pub max_words: usize,
    /// Words to explain (0-based over the caption's words; repeatable). Default:
    /// every word, and the whole caption.
    #[arg(long = "word")]
    pub words: Vec<usize>,
    /// Methods (as for explain; the groups all, cams and gradients leave out CAM,
    /// which needs a GAP + linear head). Repeatable.
    #[arg(long = "method", default_value = "grad-cam")]
    pub methods: Vec<String>,
    #[command(flatten)]
    pub options: MethodArgs,
    /// Output folder.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Also write the raw maps: <stem>.word<K>.<method>.npy, <stem>.caption.<method>.npy.
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

/// What each image's caption is and which of its words are explained.
struct Item {
    tokens: Vec<usize>,
    words: Vec<String>,
    unknown: Vec<String>,
    explained: Vec<usize>,
    generated: bool,
}

/// What to explain and how, beyond the model and the images.
pub struct CaptionOptions {
    /// The caption for every image; `None`: the model's own.
    pub caption: Option<String>,
    /// Beam width (1: greedy).
    pub beam: usize,
    /// Longest generated caption.
    pub max_words: usize,
    /// Words to explain; empty: all.
    pub words: Vec<usize>,
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

pub fn caption(args: CaptionArgs) -> Result<()> {
    inputs::check_arch(&args.arch, "show-and-tell")?;
    let opts = CaptionOptions {
        caption: args.caption.clone(),
        beam: args.beam,
        max_words: args.max_words,
        words: args.words.clone(),
        methods: parse_methods(&args.methods, false)?,
        settings: Settings::from_args(&args.options, 16, 8)?,
        colormap: explain::parse_colormap(&args.colormap)?,
        npy: args.npy,
        quiet: args.quiet,
    };
    let model: ShowAndTell<f32> = ShowAndTell::load(&args.encoder, &args.decoder)?;
    let vocab = Vocab::load(&args.vocab)?;
    let source = inputs::Source {
        arch: args.arch.clone(),
        weights: args.encoder.clone(),
        image: args.image.clone(),
        input: None,
        size: args.size,
    };
    let batch = inputs::load_batch(&source, 3)?;
    let mut out = Outputs::default();
    let trunk = args.device.open()?.trunk(&model.encoder)?;
    let summary = run(&model, &trunk, &vocab, &batch, &opts, &mut out, &args.out)?;
    out.commit(&args.out)?;
    for item in summary["items"].as_array().into_iter().flatten() {
        let unknown: Vec<&str> = item["unknown"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !unknown.is_empty() {
            eprintln!(
                "warning: words not in the vocabulary, read as <unk>: {}",
                unknown.join(", ")
            );
            break;
        }
    }
    println!("{summary}");
    Ok(())
}

/// Captions (given or generated) and explains every image of `batch`, staging the
/// files in `out` (named as they will be in `out_dir`); returns the JSON summary. The
/// explanations run the encoder on `trunk` (the model's own, or its copy on a GPU).
pub fn run<N: Executor<f32, Cpu>>(
    model: &ShowAndTell<f32>,
    trunk: &N,
    vocab: &Vocab,
    batch: &Batch,
    opts: &CaptionOptions,
    out: &mut Outputs,
    out_dir: &std::path::Path,
) -> Result<Value> {
    model.check_vocab(vocab)?;
    opts.settings.check(&opts.methods)?;
    for l in &opts.settings.layers {
        attrib_core::LayerTap::check_layer(&model.encoder, l)?;
    }
    let (start, end) = (vocab.special("<start>")?, vocab.special("<end>")?);
    let given = opts
        .caption
        .as_deref()
        .map(|c| vocab.tokenize(c, "--caption"))
        .transpose()?;
    let features = model.features(batch.x.view())?;
    let dim = model.decoder.embed_size();
    let mut items = Vec::with_capacity(batch.stems.len());
    for (i, stem) in batch.stems.iter().enumerate() {
        let (tokens, words, unknown, generated) = match &given {
            Some(t) => {
                let mut tokens = vec![start];
                tokens.extend(&t.ids);
                tokens.push(end);
                (tokens, t.words.clone(), t.unknown.clone(), false)
            }
            None => {
                let f = &features[i * dim..(i + 1) * dim];
                let tokens = generate(model, f, opts.beam, opts.max_words, start, end)?;
                let words = tokens[1..tokens.len() - 1]
                    .iter()
                    .map(|&t| vocab.token(t).to_string())
                    .collect();
                (tokens, words, Vec::new(), true)
            }
        };
        let n = tokens.len() - 2;
        if n == 0 {
            return Err(Error::param(
                "caption",
                format!("the caption of {stem} has no words (the model ended it at once)"),
            ));
        }
        let explained = if opts.words.is_empty() {
            (0..n).collect()
        } else {
            for &k in &opts.words {
                if k >= n {
                    return Err(Error::param(
                        "--word",
                        format!("{k}: the caption of {stem} has {n} words (0..={})", n - 1),
                    ));
                }
            }
            opts.words.clone()
        };
        items.push(Item {
            tokens,
            words,
            unknown,
            explained,
            generated,
        });
    }
    let mut summary = Vec::new();
    let mut layers = serde_json::Map::new();
    for (i, item) in items.iter().enumerate() {
        summary.push(explain_item(
            model,
            trunk,
            batch,
            i,
            item,
            opts,
            vocab,
            out,
            out_dir,
            &mut layers,
        )?);
    }
    Ok(json!({
        "arch": "show-and-tell",
        "trunk": model.trunk.name(),
        "methods": opts.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "layers": layers,
        "items": summary,
    }))
}

/// `<start> ... <end>` from the model: greedy as the tutorial's `sample` (cut at
/// `<end>`, which is added if it never came), or beam search.
fn generate(
    model: &ShowAndTell<f32>,
    feature: &[f32],
    beam: usize,
    max_words: usize,
    start: usize,
    end: usize,
) -> Result<Vec<usize>> {
    if beam > 1 {
        let (mut t, _) = model.beam_search(feature, beam, max_words, start, end)?;
        if t.last() != Some(&end) {
            t.push(end);
        }
        return Ok(t);
    }
    if beam == 0 {
        return Err(Error::param("--beam", "must be positive"));
    }
    let ids = model.greedy(feature, max_words + 1)?;
    let mut tokens = vec![start];
    // The first sampled token stands for <start>: the sample feeds it back as such.
    tokens.extend(ids.iter().skip(1).take_while(|&&t| t != end));
    tokens.push(end);
    Ok(tokens)
}

/// Explains one image's words and caption with every method, in one batched pass
/// per method (a copy of the image per explained word, and one for the caption).
#[allow(clippy::too_many_arguments)]
fn explain_item<N: Executor<f32, Cpu>>(
    model: &ShowAndTell<f32>,
    trunk: &N,
    batch: &Batch,
    i: usize,
    item: &Item,
    opts: &CaptionOptions,
    vocab: &Vocab,
    out: &mut Outputs,
    out_dir: &std::path::Path,
    layers: &mut serde_json::Map<String, Value>,
) -> Result<Value> {
    let (methods, settings, cmap) = (&opts.methods, &opts.settings, opts.colormap);
    let stem = &batch.stems[i];
    let k = item.explained.len();
    let outputs = item.tokens.len() - 1;
    let rows = k + 1;
    let one = batch.x.slice(s![i..i + 1, .., .., ..]);
    let x: Array4<f32> = ndarray::concatenate(Axis(0), &vec![one; rows])
        .map_err(|e| Error::Backend(e.to_string()))?;
    let conditioned = model
        .conditioned(&vec![item.tokens.clone(); rows])?
        .on(trunk);
    let mut seed = Array2::<f32>::zeros((rows, outputs));
    for (r, &w) in item.explained.iter().enumerate() {
        seed[[r, w]] = 1.0;
    }
    seed.row_mut(k).fill(1.0);
    let target = Target::Seed(seed);
    let log_probs = model
        .conditioned(std::slice::from_ref(&item.tokens))?
        .on(trunk)
        .forward(one)?;
    let mut headers = vec!["original".to_string()];
    headers.extend(item.explained.iter().map(|&w| item.words[w].clone()));
    headers.push("caption".into());
    let photo = &batch.photos[i];
    let (h, w) = (photo.dim().1 as u32, photo.dim().2 as u32);
    let mut panel = Panel::new((w.max(128), h.max(128)), headers);
    let mut files = Vec::new();
    for &m in methods.iter() {
        let map = methods::attribute(&conditioned, m, &x, &target, settings, opts.quiet)?;
        layers.insert(
            m.name().to_string(),
            methods::map_layer(m, &map, settings, &model.encoder),
        );
        let mut tiles = vec![viz::to_image(photo.view())];
        for r in 0..rows {
            let tile = methods::render(m, &map, r, photo, cmap)?;
            let what = if r < k {
                format!("word{}", item.explained[r])
            } else {
                "caption".to_string()
            };
            let name = format!("{stem}.{what}.{}.png", m.name());
            out.png(name.clone(), tile.clone());
            files.push(name);
            tiles.push(tile);
            if opts.npy {
                let name = format!("{stem}.{what}.{}.npy", m.name());
                out.npy(
                    name.clone(),
                    map.values
                        .index_axis(Axis(0), r)
                        .insert_axis(Axis(0))
                        .to_owned(),
                );
                files.push(name);
            }
        }
        panel.row(m.name(), tiles);
    }
    let name = format!("{stem}.panel.png");
    out.png(name.clone(), panel.render());
    files.push(name);
    let tokens: Vec<Value> = item.tokens[1..]
        .iter()
        .zip(log_probs.row(0))
        .map(|(&t, &lp)| json!({"token": vocab.token(t), "log_prob": lp}))
        .collect();
    Ok(json!({
        "input": stem,
        "caption": item.words.join(" "),
        "generated": item.generated,
        "tokens": tokens,
        "caption_log_prob": log_probs.row(0).sum(),
        "explained_words": item.explained,
        "unknown": item.unknown,
        "files": files.iter().map(|f| out_dir.join(f).display().to_string()).collect::<Vec<_>>(),
    }))
}
