//! One evaluation run: the images of a shard, each method's maps for the classes the
//! metrics need (one batched attribution per method and image), the metrics, and a
//! JSON line per image and method.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use attrib_core::resample::resize_bilinear;
use attrib_core::{AttributionMap, Error, LayerTap, MapLayout, Model, Result, Target};
use attrib_dfdx::{imagenet, weights::randomised, Arch, Network, WeightMap};
use attrib_eval::annotations::{self, AnnotatedImage, ClassMap, Format};
use attrib_eval::curves::{CausalMetric, Substrate};
use attrib_eval::localisation::{localisation_error, segment_box, Prediction};
use attrib_eval::pointing::{hits, is_difficult, map_point};
use attrib_eval::rank::spearman_defined;
use attrib_eval::sanity::{compare, Randomisation};
use attrib_eval::PixelBox;
use attrib_viz::render::{draw_box, draw_label};
use attrib_viz::{normalize, overlay, Colormap, Normalization};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Array3, Array4, Axis, Ix3, Ix4};
use serde_json::{json, Map, Value};

use super::report::{self, io};
use super::{EvalArgs, Metric, Shard};
use crate::inputs::Opened;
use crate::methods::{attribute, parse_methods, Method, Settings};

/// A classifier on the run's device.
type Net = Box<dyn LayerTap<f32>>;

/// Everything the images share.
struct Context {
    arch: Arch,
    /// The device the networks run on, and the evaluated network there.
    device: Opened,
    net: Net,
    /// The state dict, kept for the sanity checks' randomised copies.
    weights: Option<WeightMap>,
    methods: Vec<Method>,
    metrics: Vec<Metric>,
    settings: Settings,
    classes: ClassMap,
    data: PathBuf,
    size: usize,
    threshold: f64,
    tolerance: f64,
    deletion: CausalMetric,
    insertion: CausalMetric,
    randomisations: Vec<Randomisation>,
    sanity_layers: Vec<String>,
    seed: u64,
}

impl Context {
    fn has(&self, m: Metric) -> bool {
        self.metrics.contains(&m)
    }
}

fn substrate(flag: &str, s: &str) -> Result<Substrate> {
    match s {
        "zero" => Ok(Substrate::Zero),
        "blur" => Ok(Substrate::RISE_BLUR),
        "mean" => Ok(Substrate::Mean),
        _ => Err(Error::param(
            flag,
            format!("unknown `{s}`; valid: zero, blur, mean"),
        )),
    }
}

/// The conv and linear modules from the classifier down: Adebayo et al.'s cascade,
/// layer by layer.
fn default_sanity_layers(net: &Network<f32>, weights: &WeightMap) -> Vec<String> {
    let convs: Vec<String> = net
        .layers()
        .into_iter()
        .filter(|l| l.kind == "conv2d")
        .map(|l| l.name)
        .collect();
    let mut heads: Vec<String> = weights
        .iter()
        .filter(|(k, t)| k.ends_with(".weight") && t.shape.len() == 2)
        .map(|(k, _)| k.trim_end_matches(".weight").to_string())
        .filter(|m| !convs.contains(m))
        .collect();
    // `classifier.10` after `classifier.3`.
    heads.sort_by_key(|m| {
        m.split('.')
            .map(|p| (p.parse::<u64>().unwrap_or(u64::MAX), p.to_string()))
            .collect::<Vec<_>>()
    });
    convs.into_iter().chain(heads).rev().collect()
}

/// The `(image, method)` pairs `records.jsonl` at `path` holds. A last line
/// without its newline (a run killed while writing) is cut off, to be redone.
fn done_pairs(path: &Path) -> Result<BTreeSet<(String, String)>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(io(path, e)),
    };
    let complete = report::complete_len(&text);
    if complete < text.len() {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        f.set_len(complete as u64).map_err(|e| io(path, e))?;
        f.sync_all().map_err(|e| io(path, e))?;
    }
    Ok(report::parse_records(&text, path)?
        .iter()
        .map(|(_, v)| report::key_of(v).expect("checked on parsing"))
        .collect())
}

/// The settings that decide the numbers, as `config.json` holds them.
fn config(args: &EvalArgs, ctx: &Context, images: usize) -> Value {
    let file_name = |p: &Option<PathBuf>| {
        p.as_deref()
            .and_then(Path::file_name)
            .map(|f| f.to_string_lossy().into_owned())
    };
    let params: Map<String, Value> = ctx
        .methods
        .iter()
        .filter(|m| !m.info().params.is_empty())
        .map(|m| (m.name().to_string(), ctx.settings.describe(*m)))
        .collect();
    json!({
        "arch": ctx.arch.name(),
        "weights": file_name(&args.weights),
        "annotations": file_name(&args.annotations),
        "classes": file_name(&args.classes),
        "images": images,
        "methods": ctx.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "metrics": ctx.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "params": params,
        "layers": ctx.settings.layers,
        "size": ctx.size,
        "threshold": ctx.threshold,
        "tolerance": ctx.tolerance,
        "curve_steps": args.curve_steps,
        "deletion_substrate": args.deletion_substrate,
        "insertion_substrate": args.insertion_substrate,
        "randomisation": args.randomisation,
        "sanity_layers": ctx.sanity_layers,
        "seed": ctx.seed,
        "resamples": args.resamples,
        "examples": args.examples,
    })
}

/// Runs the evaluation; see the module docs of `eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let missing = |f: &str| Error::param(f, "is required");
    let arch: Arch = args
        .arch
        .as_deref()
        .ok_or_else(|| missing("--arch"))?
        .parse()?;
    let weights_path = args.weights.clone().ok_or_else(|| missing("--weights"))?;
    let data = args.data.clone().ok_or_else(|| missing("--data"))?;
    let ann_path = args
        .annotations
        .clone()
        .ok_or_else(|| missing("--annotations"))?;
    let metrics = Metric::parse_list(&args.metrics)?;
    if args.size == 0 || args.size > crate::inputs::MAX_SIZE {
        return Err(Error::param(
            "--size",
            format!("{} is outside 1..={}", args.size, crate::inputs::MAX_SIZE),
        ));
    }
    if !(0.0..=1.0).contains(&args.threshold) {
        return Err(Error::param(
            "--threshold",
            format!("{} is not a fraction in [0, 1]", args.threshold),
        ));
    }
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        return Err(Error::param(
            "--tolerance",
            format!("{} is not a non-negative number of pixels", args.tolerance),
        ));
    }
    let pixels = args.size * args.size;
    if args.curve_steps == 0 || args.curve_steps > pixels {
        return Err(Error::param(
            "--curve-steps",
            format!("{} is outside 1..={pixels} (the pixels)", args.curve_steps),
        ));
    }
    if args.resamples == 0 {
        return Err(Error::param("--resamples", "must be positive"));
    }
    let step = pixels.div_ceil(args.curve_steps);
    let deletion = CausalMetric {
        substrate: substrate("--deletion-substrate", &args.deletion_substrate)?,
        ..CausalMetric::deletion(step)
    };
    let insertion = CausalMetric {
        substrate: substrate("--insertion-substrate", &args.insertion_substrate)?,
        ..CausalMetric::insertion(step)
    };
    let randomisations = match args.randomisation.as_str() {
        "cascading" => vec![Randomisation::Cascading],
        "independent" => vec![Randomisation::Independent],
        "both" => vec![Randomisation::Cascading, Randomisation::Independent],
        s => {
            return Err(Error::param(
                "--randomisation",
                format!("unknown `{s}`; valid: cascading, independent, both"),
            ))
        }
    };
    let shard = args.shard.as_deref().map(Shard::parse).transpose()?;
    let format = args
        .format
        .as_deref()
        .map(str::parse::<Format>)
        .transpose()?;

    // The state dict outlives the network only for the sanity checks' copies.
    let weight_map = WeightMap::load(&weights_path)?;
    let (net, weight_map) = if metrics.contains(&Metric::Sanity) {
        let net = arch.from_file_weights::<f32>(weight_map.clone(), &weights_path)?;
        (net, Some(weight_map))
    } else {
        (
            arch.from_file_weights::<f32>(weight_map, &weights_path)?,
            None,
        )
    };
    let methods = parse_methods(&args.methods, net.linear_head().is_some())?;
    let settings = Settings::from_args(&args.options, 16, 8)?;
    if settings.flag(&attrib_methods::registry::PER_CHANNEL) {
        return Err(Error::param(
            "--per-channel",
            "per-channel maps are not one map per class; the metrics need one",
        ));
    }
    settings.check(&methods)?;
    for l in &settings.layers {
        net.check_layer(l)?;
    }
    let classes = match &args.classes {
        Some(p) => {
            let text = fs::read_to_string(p).map_err(|e| io(p, e))?;
            ClassMap::from_json(&text).map_err(|e| io(p, e))?
        }
        None => ClassMap::imagenet_synsets(),
    };
    classes.check(net.num_outputs())?;
    let images = annotations::read(&ann_path, format)?;
    for img in &images {
        for l in img.labels() {
            classes
                .classes(l)
                .map_err(|e| io(&ann_path, format!("{}: {e}", img.file)))?;
        }
    }
    let sanity_layers = match &weight_map {
        Some(map) => {
            let layers = match &args.sanity_layers {
                Some(s) => s
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect(),
                None => default_sanity_layers(&net, map),
            };
            if layers.is_empty() {
                return Err(Error::param("--sanity-layers", "no layer given"));
            }
            // A wrong name fails here, not after the first image.
            randomised(map, &layers, 0)?;
            layers
        }
        None => Vec::new(),
    };
    let device = args.device.open()?;
    let ctx = Context {
        arch,
        weights: weight_map,
        net: device.place(net)?,
        device,
        methods,
        metrics,
        settings,
        classes,
        data,
        size: args.size,
        threshold: args.threshold,
        tolerance: args.tolerance,
        deletion,
        insertion,
        randomisations,
        sanity_layers,
        seed: args.options.seed,
    };

    let out = &args.out;
    fs::create_dir_all(out.join("examples")).map_err(|e| io(out, e))?;
    let mut cfg = config(&args, &ctx, images.len());
    let cfg_path = out.join("config.json");
    if cfg_path.exists() {
        report::check_same_config(&cfg, &report::read_config(out)?, &cfg_path)?;
    }
    cfg["shard"] = match shard {
        Some(s) => json!([s.index, s.count]),
        None => Value::Null,
    };
    let cfg_text = serde_json::to_string_pretty(&cfg).expect("JSON") + "\n";
    attrib_io::fs::write_atomic(&cfg_path, |f| f.write_all(cfg_text.as_bytes()))?;

    let records = out.join("records.jsonl");
    let done = done_pairs(&records)?;
    // This shard's images with the methods still to run on each.
    let mut todo: Vec<(usize, &AnnotatedImage, Vec<Method>)> = images
        .iter()
        .enumerate()
        .filter(|(i, _)| shard.is_none_or(|s| s.takes(*i)))
        .map(|(i, img)| {
            let methods: Vec<Method> = ctx
                .methods
                .iter()
                .copied()
                .filter(|m| !done.contains(&(img.file.clone(), m.name().to_string())))
                .collect();
            (i, img, methods)
        })
        .filter(|(_, _, methods)| !methods.is_empty())
        .collect();
    let cut = args.limit.is_some_and(|n| n < todo.len());
    if let Some(n) = args.limit {
        todo.truncate(n);
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&records)
        .map_err(|e| io(&records, e))?;
    let pb = if args.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(todo.len() as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:>20} [{bar:30}] {pos}/{len} images, {per_sec}, ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb
    };
    if !done.is_empty() && !args.quiet {
        pb.println(format!(
            "resuming: {} image-method results already in {}",
            done.len(),
            records.display()
        ));
    }
    for (index, img, methods) in todo {
        pb.set_message(img.file.clone());
        let example_dir = (index < args.examples).then(|| out.join("examples"));
        let lines = evaluate(&ctx, img, &methods, example_dir.as_deref())?;
        let mut text = String::new();
        for l in lines {
            text.push_str(&serde_json::to_string(&l).expect("JSON"));
            text.push('\n');
        }
        // One write per image, synced: a kill leaves whole images or a torn last
        // line, which the next run cuts off.
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| io(&records, e))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    drop(file);
    if cut {
        eprintln!(
            "stopped after --limit images; run again to continue, the summary comes when every image is done"
        );
        return Ok(());
    }
    let summary = report::write(out)?;
    println!("{summary}");
    Ok(())
}

/// Item `i` of a map as one `(S, S)` map per image pixel: layer maps upsampled
/// bilinearly (pytorch-grad-cam's resize), input-space maps summed over channels
/// and taken absolute (Captum's `absolute_value` visualisation), pixel maps as they
/// are.
fn pixel_map(map: &AttributionMap<f32>, i: usize, size: usize, m: Method) -> Result<Array2<f32>> {
    let bad = |e: ndarray::ShapeError| Error::Backend(e.to_string());
    Ok(match &map.layout {
        MapLayout::Input => {
            let v = map
                .values
                .view()
                .into_dimensionality::<Ix4>()
                .map_err(bad)?;
            v.index_axis(Axis(0), i).sum_axis(Axis(0)).mapv(f32::abs)
        }
        MapLayout::Layer { .. } => {
            let v = map
                .values
                .view()
                .into_dimensionality::<Ix3>()
                .map_err(bad)?;
            resize_bilinear(v.slice(ndarray::s![i..i + 1, .., ..]), size, size)
                .index_axis_move(Axis(0), 0)
        }
        MapLayout::Pixel => {
            let v = map
                .values
                .view()
                .into_dimensionality::<Ix3>()
                .map_err(bad)?;
            v.index_axis(Axis(0), i).to_owned()
        }
        MapLayout::LayerChannels { .. } => {
            return Err(Error::unsupported(
                m.name(),
                "per-channel maps are not one map per class",
            ))
        }
    })
}

/// `map` `(S, S)` upsampled to the image's `height x width`.
fn to_image(map: &Array2<f32>, height: usize, width: usize) -> Array2<f32> {
    if map.dim() == (height, width) {
        return map.clone();
    }
    resize_bilinear(map.view().insert_axis(Axis(0)), height, width).index_axis_move(Axis(0), 0)
}

/// `map` as `f64` values.
fn values(map: &Array2<f32>) -> Vec<f64> {
    map.iter().map(|&v| v as f64).collect()
}

fn box_json(b: &PixelBox) -> Value {
    json!([b.x0, b.y0, b.x1, b.y1])
}

/// A label's part of a file name.
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Each method's record for one image.
fn evaluate(
    ctx: &Context,
    img: &AnnotatedImage,
    methods: &[Method],
    examples: Option<&Path>,
) -> Result<Vec<Value>> {
    let path = ctx.data.join(&img.file);
    let rgb = attrib_io::image::read_rgb8(&path)?;
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    if (w, h) != (img.width, img.height) {
        return Err(io(
            &path,
            format!(
                "is {w}x{h}; its annotation says {}x{}",
                img.width, img.height
            ),
        ));
    }
    let photo = imagenet::resize_rgb(&rgb, ctx.size);
    let x = imagenet::normalize(&photo);
    let scores = ctx.net.forward(x.view())?;
    let probs = crate::inputs::softmax(&scores);
    let n_out = ctx.net.num_outputs();
    let top = crate::inputs::top_k(&probs, 5).remove(0);
    // Each label's explained class: the most probable of the classes it means.
    let labels: Vec<(&str, usize, Vec<PixelBox>)> = img
        .labels()
        .into_iter()
        .map(|l| {
            let cs = ctx.classes.classes(l)?;
            let c = *cs
                .iter()
                .max_by(|&&a, &&b| probs[[0, a]].total_cmp(&probs[[0, b]]).then(b.cmp(&a)))
                .expect("a label maps to at least one class");
            Ok((l, c, img.boxes(l)))
        })
        .collect::<Result<_>>()?;
    let per_label = ctx.has(Metric::Pointing)
        || ctx.has(Metric::Deletion)
        || ctx.has(Metric::Insertion)
        || ctx.has(Metric::Faithfulness);
    let loc_k = if n_out >= 5 { 5 } else { 1 };
    let mut need: Vec<usize> = Vec::new();
    if ctx.has(Metric::Localisation) {
        need.extend(top.iter().take(loc_k).map(|&(c, _)| c));
    }
    // The examples draw each label's map, whatever the metrics.
    if per_label || examples.is_some() {
        need.extend(labels.iter().map(|l| l.1));
    }
    let mut seen = BTreeSet::new();
    need.retain(|c| seen.insert(*c));
    let at = |c: usize| need.iter().position(|&n| n == c).expect("needed class");
    // The image once per class explained: one batched attribution covers them all.
    let copies = |n: usize| -> Array4<f32> {
        let (_, c, h, w) = x.dim();
        x.broadcast((n, c, h, w))
            .expect("one row broadcasts")
            .to_owned()
    };
    let xs = copies(need.len());
    let target = Target::PerSample(need.clone());
    // Occlusion only for the labels' classes: its cost grows with the rows, and the
    // top-5 rows of the shared batch are localisation's alone.
    let occlusion = if ctx.has(Metric::Faithfulness) && !labels.is_empty() {
        let occ = crate::methods::parse_methods(&["occlusion".to_string()], false)?[0];
        let mut classes: Vec<usize> = labels.iter().map(|l| l.1).collect();
        classes.sort_unstable();
        classes.dedup();
        let rows = copies(classes.len());
        let target = Target::PerSample(classes.clone());
        let map = attribute(&ctx.net, occ, &rows, &target, &ctx.settings, true)?;
        Some(
            labels
                .iter()
                .map(|l| {
                    let i = classes.iter().position(|&c| c == l.1).expect("listed");
                    pixel_map(&map, i, ctx.size, occ)
                })
                .collect::<Result<Vec<_>>>()?,
        )
    } else {
        None
    };
    let image = x.index_axis(Axis(0), 0);
    let mut sanity_records = if ctx.has(Metric::Sanity) {
        Some(sanity(ctx, methods, &x, &labels, &top)?)
    } else {
        None
    };
    let mut out = Vec::with_capacity(methods.len());
    for &m in methods {
        let maps: Vec<Array2<f32>> = if need.is_empty() {
            Vec::new()
        } else {
            let map = attribute(&ctx.net, m, &xs, &target, &ctx.settings, true)?;
            (0..need.len())
                .map(|i| pixel_map(&map, i, ctx.size, m))
                .collect::<Result<_>>()?
        };
        for (map, c) in maps.iter().zip(&need) {
            if let Some(((y, xx), v)) = map.indexed_iter().find(|(_, v)| !v.is_finite()) {
                return Err(Error::Backend(format!(
                    "{}'s map of class {c} for {} has {v} at ({xx}, {y})",
                    m.name(),
                    img.file
                )));
            }
        }
        let mut rec = Map::new();
        rec.insert("image".into(), json!(img.file));
        rec.insert("method".into(), json!(m.name()));
        rec.insert(
            "top5".into(),
            Value::Array(
                top.iter()
                    .map(|&(c, p)| json!({"class": c, "probability": p}))
                    .collect(),
            ),
        );
        let mut predictions = Vec::new();
        if ctx.has(Metric::Localisation) {
            for &(c, _) in top.iter().take(loc_k) {
                let b = segment_box(to_image(&maps[at(c)], h, w).view(), ctx.threshold)?;
                predictions.push(Prediction { class: c, bbox: b });
            }
            rec.insert(
                "found".into(),
                Value::Array(
                    predictions
                        .iter()
                        .map(|p| json!({"class": p.class, "box": p.bbox.as_ref().map(box_json)}))
                        .collect(),
                ),
            );
        }
        let mut label_recs = Vec::new();
        for (li, (label, c, boxes)) in labels.iter().enumerate() {
            let mut lr = Map::new();
            lr.insert("label".into(), json!(label));
            lr.insert("class".into(), json!(c));
            lr.insert("probability".into(), json!(probs[[0, *c]]));
            lr.insert(
                "boxes".into(),
                Value::Array(boxes.iter().map(box_json).collect()),
            );
            let classes = ctx.classes.classes(label)?;
            if ctx.has(Metric::Localisation) {
                let error = |k: usize| -> Result<bool> {
                    for &cl in classes {
                        if !localisation_error(&predictions, k, cl, boxes)? {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                };
                lr.insert("top1_error".into(), json!(error(1)?));
                lr.insert(
                    "top5_error".into(),
                    if loc_k == 5 {
                        json!(error(5)?)
                    } else {
                        Value::Null
                    },
                );
            }
            if per_label {
                let map = &maps[at(*c)];
                if ctx.has(Metric::Pointing) {
                    let point = map_point(map.view(), h, w)?;
                    lr.insert("point".into(), json!([point.0, point.1]));
                    lr.insert("hit".into(), json!(hits(point, boxes, h, w, ctx.tolerance)));
                    lr.insert(
                        "difficult".into(),
                        json!(is_difficult(boxes, h, w, labels.len() > 1)),
                    );
                }
                for (metric, game) in [
                    (Metric::Deletion, &ctx.deletion),
                    (Metric::Insertion, &ctx.insertion),
                ] {
                    if ctx.has(metric) {
                        let curve = game.run(&ctx.net, image, map.view(), *c)?;
                        lr.insert(
                            metric.name().into(),
                            json!({"auc": curve.auc, "curve": curve.scores}),
                        );
                    }
                }
                if let Some(occ) = &occlusion {
                    // Undefined (null) where either map is constant.
                    let rho = spearman_defined(&values(map), &values(&occ[li]))?;
                    lr.insert("faithfulness".into(), json!(rho));
                }
            }
            label_recs.push(Value::Object(lr));
        }
        rec.insert("labels".into(), Value::Array(label_recs));
        if let Some(s) = &mut sanity_records {
            rec.insert("sanity".into(), s.remove(0));
        }
        if let Some(dir) = examples {
            for (label, c, boxes) in &labels {
                example(dir, img, m, &rgb, &maps[at(*c)], label, boxes, ctx)?;
            }
        }
        out.push(Value::Object(rec));
    }
    Ok(out)
}

/// The sanity checks of every method on the image's first label's class (its top
/// class when it has no label): one record per method. Each randomised network is
/// built once per step and explained by every method, rather than rebuilt per method.
fn sanity(
    ctx: &Context,
    methods: &[Method],
    x: &Array4<f32>,
    labels: &[(&str, usize, Vec<PixelBox>)],
    top: &[(usize, f32)],
) -> Result<Vec<Value>> {
    let weights = ctx.weights.as_ref().expect("kept for the sanity checks");
    let class = labels.first().map_or(top[0].0, |l| l.1);
    let target = Target::Class(class);
    let explain = |net: &Net, m: Method| -> Result<Array2<f64>> {
        let map = attribute(net, m, x, &target, &ctx.settings, true)?;
        Ok(pixel_map(&map, 0, ctx.size, m)?.mapv(f64::from))
    };
    let originals: Vec<Array2<f64>> = methods
        .iter()
        .map(|&m| explain(&ctx.net, m))
        .collect::<Result<_>>()?;
    let mut out: Vec<Map<String, Value>> = methods
        .iter()
        .map(|_| Map::from_iter([("class".to_string(), json!(class))]))
        .collect();
    for &how in &ctx.randomisations {
        let mut steps: Vec<Vec<Value>> = vec![Vec::new(); methods.len()];
        for names in how.steps(&ctx.sanity_layers) {
            let net = ctx.device.place(
                ctx.arch
                    .from_weights::<f32>(randomised(weights, &names, ctx.seed)?)?,
            )?;
            for (i, &m) in methods.iter().enumerate() {
                let s = compare(originals[i].view(), explain(&net, m)?.view())?;
                steps[i].push(json!({
                    "layers": names,
                    "spearman": s.spearman,
                    "spearman_abs": s.spearman_abs,
                    "ssim": s.ssim,
                    "hog": s.hog,
                }));
            }
        }
        let key = match how {
            Randomisation::Cascading => "cascading",
            Randomisation::Independent => "independent",
        };
        for (o, st) in out.iter_mut().zip(steps) {
            o.insert(key.into(), Value::Array(st));
        }
    }
    Ok(out.into_iter().map(Value::Object).collect())
}

/// `examples/<stem>.<label>.<method>.png`: the map over the photo at its own size,
/// the label's ground-truth boxes (green), the box the map gives (red) and the
/// point it points at (white cross).
#[allow(clippy::too_many_arguments)]
fn example(
    dir: &Path,
    img: &AnnotatedImage,
    m: Method,
    rgb: &image::RgbImage,
    map: &Array2<f32>,
    label: &str,
    boxes: &[PixelBox],
    ctx: &Context,
) -> Result<()> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let photo = Array3::from_shape_fn((3, h, w), |(c, y, x)| {
        rgb.get_pixel(x as u32, y as u32)[c] as f32 / 255.0
    });
    let up = to_image(map, h, w);
    let heat = normalize(up.view(), Normalization::MinMax);
    let mut pic = overlay(photo.view(), heat.view(), Colormap::Jet, 0.5);
    let thick = ((w.min(h) / 150).max(2)) as u32;
    // Inclusive pixel boxes as the outer edges draw_box takes.
    let mut frame = |b: &PixelBox, colour: [u8; 3]| {
        let edges = [b.x0, b.y0, b.x1 + 1, b.y1 + 1].map(|v| v as f64);
        draw_box(&mut pic, edges, thick, colour);
    };
    for b in boxes {
        frame(b, [0, 220, 0]);
    }
    if let Some(b) = segment_box(up.view(), ctx.threshold)? {
        frame(&b, [230, 0, 0]);
    }
    let (px, py) = map_point(map.view(), h, w)?;
    let arm = (w.min(h) / 40).max(4);
    for d in 0..=arm {
        for (x, y) in [
            (px + d, py),
            (px.wrapping_sub(d), py),
            (px, py + d),
            (px, py.wrapping_sub(d)),
        ] {
            if x < w && y < h {
                pic.put_pixel(x as u32, y as u32, image::Rgb([255, 255, 255]));
            }
        }
    }
    let scale = if w.min(h) >= 400 { 2 } else { 1 };
    draw_label(
        &mut pic,
        &format!("{} - {label}", m.name()),
        2,
        2,
        scale,
        [255, 255, 255],
        [0, 0, 0],
    );
    let stem = Path::new(&img.file)
        .with_extension("")
        .to_string_lossy()
        .into_owned();
    let name = format!("{}.{}.{}.png", file_part(&stem), file_part(label), m.name());
    attrib_io::fs::write_atomic(&dir.join(name), |f| attrib_viz::io::encode_png(&pic, f))
}
