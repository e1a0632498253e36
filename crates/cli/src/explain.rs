//! `attrib explain` and `attrib demo`.

use std::path::PathBuf;

use attrib_core::{AttributionMap, Error, LayerTap, MapLayout, Model, Result, Target};
use attrib_dfdx::imagenet;
use attrib_viz::{render, Colormap, Panel};
use clap::Args;
use ndarray::Axis;
use serde_json::{json, Value};

use crate::inputs::{self, Source};
use crate::methods::{
    at_layer, attribute, map_layer_name, parse_methods, progress_bar, render, Method, MethodArgs,
    Settings,
};
use crate::outputs::Outputs;

/// `--target`: `top1`, one class for all items, or one per item.
pub fn parse_target(s: &str) -> Result<Target<f32>> {
    let bad = || {
        Error::param(
            "--target",
            format!("`{s}` is not top1, a class index or a comma-separated list of class indices"),
        )
    };
    if s == "top1" {
        return Ok(Target::TopPredicted);
    }
    let classes: Vec<usize> = s
        .split(',')
        .map(|c| c.trim().parse::<usize>().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    Ok(match classes.as_slice() {
        [c] => Target::Class(*c),
        _ => Target::PerSample(classes),
    })
}

pub fn parse_colormap(s: &str) -> Result<Colormap> {
    Colormap::from_name(s).ok_or_else(|| {
        Error::param(
            "--colormap",
            format!(
                "unknown `{s}`; valid: {}",
                Colormap::ALL.map(|(n, _)| n).join(", ")
            ),
        )
    })
}

/// Arguments of `attrib explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub source: Source,
    /// Methods (`attrib methods` lists them), or a group: all (the paper's), cams,
    /// gradients. Repeatable or comma-separated.
    #[arg(long = "method", default_value = "grad-cam")]
    pub methods: Vec<String>,
    /// top1, one class for every item, or one class per item (C1,C2,...).
    #[arg(long, default_value = "top1")]
    pub target: String,
    #[command(flatten)]
    pub options: MethodArgs,
    /// Output folder.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Also write the raw maps as <stem>.<method>.npy.
    #[arg(long)]
    pub npy: bool,
    /// Colormap for heat maps: jet, viridis, turbo, diverging, gray.
    #[arg(long, default_value = "jet")]
    pub colormap: String,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Where the network runs: cpu, or cuda (GPU 0; needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = inputs::Device::Cpu)]
    pub device: inputs::Device,
}

pub fn explain(args: ExplainArgs) -> Result<()> {
    let target = parse_target(&args.target)?;
    let colormap = parse_colormap(&args.colormap)?;
    let (arch, net) = inputs::load_model(&args.source.arch, &args.source.weights)?;
    let device = args.device.open()?;
    let net = device.place(net)?;
    // The groups leave CAM out where the network has no GAP + linear head.
    let methods = parse_methods(&args.methods, net.linear_head().is_some())?;
    let settings = Settings::from_args(&args.options, 16, 8)?;
    if settings.flag(&attrib_methods::registry::PER_CHANNEL) && !args.npy {
        return Err(Error::param(
            "--per-channel",
            "per-channel maps have no picture; add --npy to write them",
        ));
    }
    settings.check(&methods)?;
    for l in &settings.layers {
        net.check_layer(l)?;
    }
    let batch = inputs::load_batch(&args.source, net.input_shape()[0])?;
    let scores = net.forward(batch.x.view())?;
    let resolved = target.resolve(scores.view())?;
    let probs = inputs::softmax(&scores);
    let pb = progress_bar(args.quiet, methods.len() as u64, "methods");
    let mut maps = Vec::new();
    for &m in &methods {
        pb.set_message(m.name());
        maps.push(attribute(
            &net, m, &batch.x, &target, &settings, args.quiet,
        )?);
        pb.inc(1);
    }
    pb.finish_and_clear();

    let mut out = Outputs::default();
    let mut files: Vec<Vec<String>> = vec![Vec::new(); batch.stems.len()];
    for (i, stem) in batch.stems.iter().enumerate() {
        let mut tiles = vec![render::to_image(batch.photos[i].view())];
        let mut headers = vec!["original".to_string()];
        for (&m, map) in methods.iter().zip(&maps) {
            if matches!(map.layout, MapLayout::LayerChannels { .. }) {
                continue;
            }
            headers.push(m.name().to_string());
            let img = render(m, map, i, &batch.photos[i], colormap)?;
            let name = format!("{stem}.{}.png", m.name());
            out.png(name.clone(), img.clone());
            files[i].push(name);
            tiles.push(img);
        }
        if tiles.len() > 2 {
            let (h, w) = (
                batch.photos[i].dim().1 as u32,
                batch.photos[i].dim().2 as u32,
            );
            let mut panel = Panel::new((w, h), headers);
            panel.row(
                row_title(
                    resolved.classes[i],
                    probs[[i, resolved.classes[i].unwrap_or(0)]],
                ),
                tiles,
            );
            let name = format!("{stem}.panel.png");
            out.png(name.clone(), panel.render());
            files[i].push(name);
        }
    }
    if args.npy {
        for (&m, map) in methods.iter().zip(&maps) {
            if batch.file_stems.len() == 1 {
                let name = format!("{}.{}.npy", batch.file_stems[0], m.name());
                out.npy(name.clone(), map.values.clone());
                files.iter_mut().for_each(|f| f.push(name.clone()));
            } else {
                for (i, stem) in batch.file_stems.iter().enumerate() {
                    let name = format!("{stem}.{}.npy", m.name());
                    out.npy(
                        name.clone(),
                        map.values
                            .index_axis(Axis(0), i)
                            .insert_axis(Axis(0))
                            .to_owned(),
                    );
                    files[i].push(name);
                }
            }
        }
    }
    let (layers, warnings) = layers_and_warnings(&net, &methods, &maps, &settings)?;
    out.commit(&args.out)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let tops = inputs::top_k(&probs, 5);
    let items: Vec<Value> = batch
        .stems
        .iter()
        .enumerate()
        .map(|(i, stem)| {
            let target = match resolved.classes[i] {
                Some(c) => json!({"class": c, "name": imagenet::class_name(c)}),
                None => Value::Null,
            };
            let files: Vec<String> = files[i].iter().map(|f| args.out.join(f).display().to_string()).collect();
            json!({"input": stem, "target": target, "top5": inputs::top_json(&tops[i]), "files": files})
        })
        .collect();
    // Each method's parameters as it ran (given or default), so a result says how it
    // was made.
    let params: serde_json::Map<String, Value> = methods
        .iter()
        .filter(|m| !m.info().params.is_empty())
        .map(|m| (m.name().to_string(), settings.describe(*m)))
        .collect();
    let summary = json!({
        "arch": arch.name(),
        "device": device.describe(),
        "methods": methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "params": params,
        "layers": layers,
        "warnings": warnings,
        "items": items,
    });
    println!("{summary}");
    Ok(())
}

/// The layer each map is at (`null` for maps in input space that use no layer), and
/// warnings about layers that make a method's map say little.
fn layers_and_warnings<M: LayerTap<f32>>(
    net: &M,
    methods: &[Method],
    maps: &[AttributionMap<f32>],
    s: &Settings,
) -> Result<(serde_json::Map<String, Value>, Vec<String>)> {
    let mut layers = serde_json::Map::new();
    let mut warnings = Vec::new();
    for (&m, map) in methods.iter().zip(maps) {
        let layer = map_layer_name(m, map, s, net);
        if let (true, Some(used)) = (m.info().needs_linear_head, &layer) {
            if let Some(asked) = s.layers.iter().find(|a| *a != used) {
                warnings.push(format!(
                    "cam is defined at the layer feeding the global-average-pool head, `{used}`; --layer {asked} applies to the Grad-CAM methods"
                ));
            }
        }
        if at_layer(m) {
            let used = if s.layers.is_empty() {
                vec![net.default_layer()]
            } else {
                s.layers.clone()
            };
            for l in &used {
                let [_, h, w] = net.check_layer(l)?.shape;
                if h == 1 && w == 1 {
                    warnings.push(format!(
                        "{} at `{l}`, a 1x1 layer, has no spatial resolution: one value per image (choose a convolutional layer; `attrib layers` lists them)",
                        m.name()
                    ));
                }
            }
        }
        layers.insert(
            m.name().to_string(),
            layer.map_or(Value::Null, Value::String),
        );
    }
    warnings.dedup();
    Ok((layers, warnings))
}

pub(crate) fn row_title(class: Option<usize>, p: f32) -> String {
    match class {
        Some(c) => format!("{c} {} (p={p:.2})", imagenet::class_name(c)),
        None => "custom target".to_string(),
    }
}
