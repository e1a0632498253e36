//! `attrib dense-caption`: explains a dense captioner (DenseCap's FCLN) region by
//! region: each region's caption, or words of it, with every method, from the boxes
//! the model proposes or the user gives.

use std::path::{Path, PathBuf};

use attrib_core::{Error, Model, Result, Target};
use attrib_dfdx::kernels::boxes::Box4;
use attrib_dfdx::zoo::densecap::{DenseCap, Proposals};
use attrib_dfdx::zoo::text::Vocab;
use attrib_dfdx::{Cpu, Executor};
use attrib_viz::render::{draw_box, draw_label};
use attrib_viz::{render as viz, Colormap, Panel};
use clap::Args;
use image::imageops::{resize, FilterType};
use image::RgbImage;
use ndarray::{s, Array2, Array4, Axis};
use serde_json::{json, Value};

use crate::explain;
use crate::inputs::{self, Batch};
use crate::methods::{self, parse_methods, Method, MethodArgs, Settings};
use crate::outputs::Outputs;

/// Arguments of `attrib dense-caption`.
#[derive(Debug, Args)]
pub struct DenseCaptionArgs {
    /// Architecture: densecap.
    #[arg(long, default_value = "densecap")]
    pub arch: String,
    /// Weights (safetensors or .pth; the state dict of tools/reference/densecap.py).
    #[arg(long)]
    pub weights: PathBuf,
    /// Vocabulary: one token per line, in index order.
    #[arg(long)]
    pub vocab: PathBuf,
    /// Images (PNG or JPEG), resized to --size x --size and normalised with ImageNet
    /// mean/std.
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// Image side after resizing (1 to 4096); 96 is the bundled model's.
    #[arg(long, default_value_t = 96)]
    pub size: usize,
    /// Explain the model's best N proposals (when neither --box nor --proposal is given).
    #[arg(long, default_value_t = 5)]
    pub regions: usize,
    /// A region to explain, `x1,y1,x2,y2` in the pixels of the image file (repeatable).
    #[arg(long = "box", value_parser = parse_box)]
    pub boxes: Vec<Box4>,
    /// A proposal to explain, by its rank after suppression (0: the best; repeatable).
    #[arg(long = "proposal")]
    pub proposals: Vec<usize>,
    /// Anchors kept by score before non-maximum suppression.
    #[arg(long, default_value_t = 60)]
    pub pre_nms: usize,
    /// Non-maximum suppression IoU (the paper's 0.7).
    #[arg(long, default_value_t = 0.7)]
    pub nms_iou: f64,
    /// The caption to explain (for every region); without it, the model's own.
    #[arg(long)]
    pub caption: Option<String>,
    /// Beam width for generating captions (1: greedy).
    #[arg(long, default_value_t = 1)]
    pub beam: usize,
    /// Longest generated caption, in words.
    #[arg(long, default_value_t = 12)]
    pub max_words: usize,
    /// Words to explain besides each whole caption (0-based; repeatable).
    #[arg(long = "word")]
    pub words: Vec<usize>,
    /// Methods (as for explain; the groups leave out CAM, which needs a GAP + linear
    /// head). Repeatable.
    #[arg(long = "method", default_value = "grad-cam")]
    pub methods: Vec<String>,
    #[command(flatten)]
    pub options: MethodArgs,
    /// Output folder.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Also write the raw maps: <stem>.<region>.<method>.npy (and .word<K>.).
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

fn parse_box(s: &str) -> std::result::Result<Box4, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|t| t.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("`{s}`: {e}; expected x1,y1,x2,y2"))?;
    match v[..] {
        [x1, y1, x2, y2] if v.iter().all(|t| t.is_finite()) && x1 <= x2 && y1 <= y2 => {
            Ok([x1, y1, x2, y2])
        }
        _ => Err(format!(
            "`{s}` is not x1,y1,x2,y2 with x1 <= x2 and y1 <= y2"
        )),
    }
}

/// One region to explain.
struct Region {
    /// `region<K>` for proposal K, `box<K>` for the K-th --box.
    id: String,
    /// In model-input pixels.
    bbox: Box4,
    /// The proposal's score (a logit), for proposals.
    score: Option<f64>,
    tokens: Vec<usize>,
    words: Vec<String>,
    generated: bool,
    objectness: f64,
    refined: Box4,
}

/// Colours of the region outlines, in order.
const COLOURS: [[u8; 3]; 6] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
];

/// Which regions of each image to explain, and how.
pub struct DenseCaptionOptions {
    /// User boxes, in the pixels of each image as read (before resizing).
    pub boxes: Vec<Box4>,
    /// Proposals by rank after suppression.
    pub proposals: Vec<usize>,
    /// Without boxes or proposals: the best N proposals.
    pub regions: usize,
    /// Proposal selection (its `top` is raised to cover the ranks asked for).
    pub how: Proposals,
    /// The caption for every region; `None`: the model's own.
    pub caption: Option<String>,
    /// Beam width (1: greedy).
    pub beam: usize,
    /// Longest generated caption.
    pub max_words: usize,
    /// Words to explain besides each caption.
    pub words: Vec<usize>,
    /// Methods.
    pub methods: Vec<Method>,
    /// Layer and method settings.
    pub settings: Settings,
    /// Heat-map colormap.
    pub colormap: Colormap,
    /// Write raw maps too.
    pub npy: bool,
    /// No progress bars.
    pub quiet: bool,
}

pub fn dense_caption(args: DenseCaptionArgs) -> Result<()> {
    inputs::check_arch(&args.arch, "densecap")?;
    let opts = DenseCaptionOptions {
        boxes: args.boxes.clone(),
        proposals: args.proposals.clone(),
        regions: args.regions,
        how: Proposals {
            pre_nms: args.pre_nms,
            iou: args.nms_iou,
            top: args.regions,
        },
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
    let model: DenseCap<f32> = DenseCap::load(&args.weights)?;
    let vocab = Vocab::load(&args.vocab)?;
    let source = inputs::Source {
        arch: args.arch.clone(),
        weights: args.weights.clone(),
        image: args.image.clone(),
        input: None,
        size: args.size,
    };
    let batch = inputs::load_batch(&source, 3)?;
    let mut out = Outputs::default();
    let trunk = args.device.open()?.trunk(&model.trunk)?;
    let summary = run(&model, &trunk, &vocab, &batch, &opts, &mut out, &args.out)?;
    out.text(
        "dense-caption.json".into(),
        serde_json::to_string_pretty(&summary).map_err(|e| Error::Backend(e.to_string()))? + "\n",
    );
    out.commit(&args.out)?;
    println!("{summary}");
    Ok(())
}

/// Proposes, captions and explains the regions of every image of `batch`, staging
/// the files in `out` (named as they will be in `out_dir`); returns the JSON summary.
/// The explanations run the trunk on `trunk` (the model's own, or its copy on a GPU);
/// proposals and recognition run on the CPU.
pub fn run<N: Executor<f32, Cpu>>(
    model: &DenseCap<f32>,
    trunk: &N,
    vocab: &Vocab,
    batch: &Batch,
    opts: &DenseCaptionOptions,
    out: &mut Outputs,
    out_dir: &Path,
) -> Result<Value> {
    if opts.boxes.is_empty() && opts.proposals.is_empty() && opts.regions == 0 {
        return Err(Error::param("--regions", "must be positive"));
    }
    if opts.beam == 0 {
        return Err(Error::param("--beam", "must be positive"));
    }
    opts.settings.check(&opts.methods)?;
    model.decoder.check_vocab(vocab)?;
    for l in &opts.settings.layers {
        attrib_core::LayerTap::check_layer(&model.trunk, l)?;
    }
    let (start, end) = (vocab.special("<start>")?, vocab.special("<end>")?);
    let given = match opts.caption.as_deref() {
        Some(c) => {
            let t = vocab.tokenize(c, "--caption")?;
            if !t.unknown.is_empty() {
                eprintln!(
                    "warning: words not in the vocabulary, read as <unk>: {}",
                    t.unknown.join(", ")
                );
            }
            Some(t)
        }
        None => None,
    };
    let how = Proposals {
        top: opts
            .how
            .top
            .max(opts.proposals.iter().max().map_or(0, |&k| k + 1)),
        ..opts.how
    };
    let features = model.feature_map(batch.x.view())?;
    let size = (batch.x.dim().2, batch.x.dim().3);
    let proposals = model.proposals(features.view(), size, how)?;
    let mut items = Vec::new();
    for (i, stem) in batch.stems.iter().enumerate() {
        let (fw, fh) = batch.original[i];
        let (sx, sy) = (size.1 as f64 / fw as f64, size.0 as f64 / fh as f64);
        let mut chosen: Vec<(String, Box4, Option<f64>)> = Vec::new();
        for (k, b) in opts.boxes.iter().enumerate() {
            // RoI Align reads zeros outside the map: a box off the image would be
            // captioned from nothing, a plausible answer to a mistyped box.
            if b[2] <= 0.0 || b[3] <= 0.0 || b[0] >= fw as f64 || b[1] >= fh as f64 {
                return Err(Error::param(
                    "--box",
                    format!(
                        "{},{},{},{} lies outside {stem} ({fw}x{fh} pixels)",
                        b[0], b[1], b[2], b[3]
                    ),
                ));
            }
            chosen.push((
                format!("box{k}"),
                [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy],
                None,
            ));
        }
        let ranks: Vec<usize> = if opts.boxes.is_empty() && opts.proposals.is_empty() {
            (0..opts.regions.min(proposals[i].len())).collect()
        } else {
            opts.proposals.clone()
        };
        for k in ranks {
            let p = proposals[i].get(k).ok_or_else(|| {
                Error::param(
                    "--proposal",
                    format!(
                        "{k}: the model made {} proposals for {stem}",
                        proposals[i].len()
                    ),
                )
            })?;
            chosen.push((format!("region{k}"), p.bbox, Some(p.score)));
        }
        if chosen.is_empty() {
            return Err(Error::param(
                "--regions",
                format!("the model made no proposal for {stem}"),
            ));
        }
        let mut regions = Vec::with_capacity(chosen.len());
        for (id, bbox, score) in chosen {
            let rec = model.recognise(features.view(), i, bbox)?;
            let (tokens, words, generated) = match &given {
                Some(t) => {
                    let mut tokens = vec![start];
                    tokens.extend(&t.ids);
                    tokens.push(end);
                    (tokens, t.words.clone(), false)
                }
                None => {
                    let (mut t, _) = model.decoder.beam_search(
                        &rec.projected,
                        opts.beam,
                        opts.max_words,
                        start,
                        end,
                    )?;
                    if t.last() != Some(&end) {
                        t.push(end);
                    }
                    let words = t[1..t.len() - 1]
                        .iter()
                        .map(|&w| vocab.token(w).to_string())
                        .collect();
                    (t, words, true)
                }
            };
            if tokens.len() < 3 {
                return Err(Error::param(
                    "caption",
                    format!(
                        "the caption of {stem}'s {id} has no words (the model ended it at once)"
                    ),
                ));
            }
            let n = tokens.len() - 2;
            if let Some(&k) = opts.words.iter().find(|&&k| k >= n) {
                return Err(Error::param(
                    "--word",
                    format!(
                        "{k}: the caption of {stem}'s {id} has {n} words (0..={})",
                        n - 1
                    ),
                ));
            }
            regions.push(Region {
                id,
                bbox,
                score,
                tokens,
                words,
                generated,
                objectness: rec.objectness,
                refined: rec.refined,
            });
        }
        items.push(explain_image(
            model, trunk, batch, i, &regions, opts, vocab, out, out_dir,
        )?);
    }
    Ok(json!({
        "arch": "densecap",
        "trunk": model.trunk_kind.name(),
        "layer": opts.settings.layers.first().cloned().unwrap_or_else(|| attrib_core::LayerTap::default_layer(&model.trunk)),
        "methods": opts.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "items": items,
    }))
}

/// The DenseCap figure: the photo (enlarged to at least 384 pixels) with each
/// region's box and caption.
fn figure(photo: &ndarray::Array3<f32>, regions: &[Region]) -> RgbImage {
    let img = viz::to_image(photo.view());
    let (w, h) = img.dimensions();
    let scale = (384.0 / w.min(h) as f64).max(1.0);
    let (sw, sh) = ((w as f64 * scale) as u32, (h as f64 * scale) as u32);
    let mut big = resize(&img, sw, sh, FilterType::Nearest);
    for (k, r) in regions.iter().enumerate() {
        let c = COLOURS[k % COLOURS.len()];
        let b = r.bbox.map(|v| v * scale);
        draw_box(&mut big, b, 3, c);
        let text = format!("{}: {}", r.id, r.words.join(" "));
        let y = (b[1].max(0.0) as u32).min(sh.saturating_sub(10));
        draw_label(
            &mut big,
            &text,
            b[0].max(0.0) as u32,
            y,
            1,
            [255, 255, 255],
            c,
        );
    }
    big
}

/// Explains every region of image `i` (and the words asked for) with every method:
/// one batched pass per method, one row per region and explained word, all rows the
/// same image (so the trunk below the first recorded layer runs once).
#[allow(clippy::too_many_arguments)]
fn explain_image<N: Executor<f32, Cpu>>(
    model: &DenseCap<f32>,
    trunk: &N,
    batch: &Batch,
    i: usize,
    regions: &[Region],
    opts: &DenseCaptionOptions,
    vocab: &Vocab,
    out: &mut Outputs,
    out_dir: &Path,
) -> Result<Value> {
    let stem = &batch.stems[i];
    let photo = &batch.photos[i];
    // Rows: per region, its caption, then its words.
    let mut rows: Vec<(usize, Option<usize>)> = Vec::new();
    for r in 0..regions.len() {
        rows.push((r, None));
        rows.extend(opts.words.iter().map(|&k| (r, Some(k))));
    }
    let queries: Vec<(Box4, Vec<usize>)> = rows
        .iter()
        .map(|&(r, _)| (regions[r].bbox, regions[r].tokens.clone()))
        .collect();
    let conditioned = model.conditioned(&queries)?.on(trunk);
    let outputs = queries.iter().map(|q| q.1.len() - 1).max().unwrap_or(0);
    let mut seed = Array2::<f32>::zeros((rows.len(), outputs));
    for (j, &(r, word)) in rows.iter().enumerate() {
        match word {
            // The caption's log-probability: every token after <start>, <end> included.
            None => seed
                .slice_mut(s![j, ..regions[r].tokens.len() - 1])
                .fill(1.0),
            Some(k) => seed[[j, k]] = 1.0,
        }
    }
    let target = Target::Seed(seed);
    let one = batch.x.slice(s![i..i + 1, .., .., ..]);
    let x: Array4<f32> = ndarray::concatenate(Axis(0), &vec![one; rows.len()])
        .map_err(|e| Error::Backend(e.to_string()))?;
    let log_probs = conditioned.forward(x.view())?;
    let name = format!("{stem}.regions.png");
    out.png(name.clone(), figure(photo, regions));
    let mut files = vec![name];
    let mut tiles: Vec<Vec<RgbImage>> = vec![Vec::new(); rows.len()];
    let mut row_files: Vec<Vec<String>> = vec![Vec::new(); rows.len()];
    for &m in &opts.methods {
        let map = methods::attribute(&conditioned, m, &x, &target, &opts.settings, opts.quiet)?;
        for (j, &(r, word)) in rows.iter().enumerate() {
            let what = match word {
                None => regions[r].id.clone(),
                Some(k) => format!("{}.word{k}", regions[r].id),
            };
            let tile = methods::render(m, &map, j, photo, opts.colormap)?;
            let name = format!("{stem}.{what}.{}.png", m.name());
            out.png(name.clone(), tile.clone());
            row_files[j].push(name);
            tiles[j].push(tile);
            if opts.npy {
                let name = format!("{stem}.{what}.{}.npy", m.name());
                out.npy(
                    name.clone(),
                    map.values
                        .index_axis(Axis(0), j)
                        .insert_axis(Axis(0))
                        .to_owned(),
                );
                row_files[j].push(name);
            }
        }
    }
    let (h, w) = (photo.dim().1 as u32, photo.dim().2 as u32);
    let tile = (w.max(128), h.max(128));
    let mut summary = Vec::new();
    for (r, region) in regions.iter().enumerate() {
        let mut headers = vec!["region".to_string()];
        headers.extend(opts.methods.iter().map(|m| m.name().to_string()));
        let mut panel = Panel::new(tile, headers);
        let mut framed = viz::to_image(photo.view());
        draw_box(&mut framed, region.bbox, 1, COLOURS[r % COLOURS.len()]);
        let mut region_files = Vec::new();
        for (j, &(rr, word)) in rows.iter().enumerate().filter(|(_, q)| q.0 == r) {
            let title = match word {
                None => region.words.join(" "),
                Some(k) => format!("\"{}\"", region.words[k]),
            };
            let mut row = vec![framed.clone()];
            row.extend(tiles[j].iter().cloned());
            panel.row(title, row);
            region_files.extend(row_files[j].iter().cloned());
            debug_assert_eq!(rr, r);
        }
        let name = format!("{stem}.{}.panel.png", region.id);
        out.png(name.clone(), panel.render());
        region_files.push(name);
        let j = rows
            .iter()
            .position(|q| q.0 == r && q.1.is_none())
            .expect("every region has its caption row");
        let n = region.tokens.len() - 1;
        let tokens: Vec<Value> = region.tokens[1..]
            .iter()
            .zip(log_probs.row(j).iter().take(n))
            .map(|(&t, &lp)| json!({"token": vocab.token(t), "log_prob": lp}))
            .collect();
        let total: f64 = log_probs.row(j).iter().take(n).map(|&v| v as f64).sum();
        summary.push(json!({
            "region": region.id,
            "box": region.bbox,
            "proposal_score": region.score,
            "objectness": region.objectness,
            "refined_box": region.refined,
            "caption": region.words.join(" "),
            "generated": region.generated,
            "tokens": tokens,
            "caption_log_prob": total,
            "files": region_files,
        }));
    }
    files.extend(summary.iter().flat_map(|s| {
        s["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(String::from))
            .collect::<Vec<_>>()
    }));
    Ok(json!({
        "input": stem,
        "size": [batch.x.dim().3, batch.x.dim().2],
        "regions": summary,
        "files": files.iter().map(|f| out_dir.join(f).display().to_string()).collect::<Vec<_>>(),
    }))
}
