//! `attrib explain` and `attrib demo`.

use std::path::PathBuf;
use std::sync::Arc;

use attrib_core::{Attribution, AttributionMap, Error, LayerTap, MapLayout, Model, Result, Target};
use attrib_dfdx::{imagenet, Network};
use attrib_methods::{
    Cam, Deconvnet, GradCam, Gradient, GuidedBackprop, GuidedGradCam, Occlusion, Saliency,
};
use attrib_viz::{
    io::colormap_image, normalize, render, upsample_normalized, Colormap, Normalization, Panel,
};
use clap::Args;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array3, Array4, Axis, Ix3, Ix4};
use serde_json::{json, Value};

use crate::inputs::{self, Source};
use crate::outputs::Outputs;

/// The methods, as the CLI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Gradient,
    Saliency,
    Deconvnet,
    GuidedBackprop,
    Cam,
    GradCam,
    CounterfactualGradCam,
    GuidedGradCam,
    Occlusion,
}

pub(crate) const METHODS: [(&str, Method); 9] = [
    ("gradient", Method::Gradient),
    ("saliency", Method::Saliency),
    ("deconvnet", Method::Deconvnet),
    ("guided-backprop", Method::GuidedBackprop),
    ("cam", Method::Cam),
    ("grad-cam", Method::GradCam),
    ("counterfactual-grad-cam", Method::CounterfactualGradCam),
    ("guided-grad-cam", Method::GuidedGradCam),
    ("occlusion", Method::Occlusion),
];

impl Method {
    pub fn name(self) -> &'static str {
        METHODS
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .expect("listed")
    }
}

/// `--method` values (repeated or comma-separated; `all`) to methods.
pub fn parse_methods(list: &[String]) -> Result<Vec<Method>> {
    parse_methods_but(list, &[])
}

/// [`parse_methods`] where `all` leaves out `inapplicable` (CAM, for models without a
/// GAP + linear head); named explicitly, they still run and say why they cannot.
pub fn parse_methods_but(list: &[String], inapplicable: &[Method]) -> Result<Vec<Method>> {
    let mut out = Vec::new();
    for name in list
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if name == "all" {
            out.extend(
                METHODS
                    .iter()
                    .map(|(_, m)| *m)
                    .filter(|m| !inapplicable.contains(m)),
            );
            continue;
        }
        let m = METHODS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                Error::param(
                    "--method",
                    format!(
                        "unknown `{name}`; valid: {}, all",
                        METHODS.map(|(n, _)| n).join(", ")
                    ),
                )
            })?;
        out.push(m);
    }
    let mut seen = Vec::new();
    out.retain(|m| {
        let new = !seen.contains(m);
        seen.push(*m);
        new
    });
    if out.is_empty() {
        return Err(Error::param("--method", "no method given"));
    }
    Ok(out)
}

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

/// How the methods are configured.
#[derive(Clone)]
pub struct Settings {
    pub layer: Option<String>,
    pub occlusion: Occlusion,
}

pub(crate) fn progress_bar(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Runs one method on the batch.
pub fn attribute<M: LayerTap<f32>>(
    net: &M,
    m: Method,
    x: &Array4<f32>,
    target: &Target<f32>,
    s: &Settings,
    quiet: bool,
) -> Result<AttributionMap<f32>> {
    let at_layer = |g: GradCam| match &s.layer {
        Some(l) => g.layer(l.clone()),
        None => g,
    };
    let v = x.view();
    match m {
        Method::Gradient => Gradient.attribute(net, v, target),
        Method::Saliency => Saliency.attribute(net, v, target),
        Method::Deconvnet => Deconvnet.attribute(net, v, target),
        Method::GuidedBackprop => GuidedBackprop.attribute(net, v, target),
        Method::Cam => Cam.attribute(net, v, target),
        Method::GradCam => at_layer(GradCam::new()).attribute(net, v, target),
        Method::CounterfactualGradCam => {
            at_layer(GradCam::counterfactual()).attribute(net, v, target)
        }
        Method::GuidedGradCam => {
            GuidedGradCam::with_grad_cam(at_layer(GradCam::new())).attribute(net, v, target)
        }
        Method::Occlusion => {
            let (_, _, h, w) = x.dim();
            let total = (s.occlusion.windows(h, w) * x.dim().0) as u64;
            let pb = Arc::new(progress_bar(quiet, total, "occlusion"));
            let p = pb.clone();
            let r = s
                .occlusion
                .clone()
                .on_progress(move |done, _| p.set_position(done as u64))
                .attribute(net, v, target);
            pb.finish_and_clear();
            r
        }
    }
}

/// Item `i`'s map as a picture: input-space maps with the paper's guided-backprop
/// normalisation, layer maps as pytorch-grad-cam-style overlays, per-pixel maps
/// colormapped (saliency) or overlaid (occlusion).
pub fn render(
    m: Method,
    map: &AttributionMap<f32>,
    i: usize,
    photo: &Array3<f32>,
    cmap: Colormap,
) -> Result<RgbImage> {
    let (h, w) = (photo.dim().1, photo.dim().2);
    Ok(match &map.layout {
        MapLayout::Input => {
            let v = map
                .values
                .view()
                .into_dimensionality::<Ix4>()
                .map_err(|e| Error::Backend(e.to_string()))?;
            render::to_image(render::guided_image(v.index_axis(Axis(0), i)).view())
        }
        MapLayout::Layer { .. } => {
            let v = map
                .values
                .view()
                .into_dimensionality::<Ix3>()
                .map_err(|e| Error::Backend(e.to_string()))?;
            let up = upsample_normalized(v.slice(ndarray::s![i..i + 1, .., ..]), h, w);
            render::overlay(photo.view(), up.index_axis(Axis(0), 0), cmap, 0.5)
        }
        MapLayout::Pixel => {
            let v = map
                .values
                .view()
                .into_dimensionality::<Ix3>()
                .map_err(|e| Error::Backend(e.to_string()))?;
            if m == Method::Occlusion {
                let n = normalize(v.index_axis(Axis(0), i), Normalization::MinMax);
                render::overlay(photo.view(), n.view(), cmap, 0.5)
            } else {
                // Saliency is peaky: clip at the 99th percentile, as Captum's
                // visualiser does by default (outlier_perc=2 clips a little more).
                let n = normalize(v.index_axis(Axis(0), i), Normalization::Percentile(99.0));
                colormap_image(n.view(), cmap)
            }
        }
    })
}

/// Arguments of `attrib explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub source: Source,
    /// Methods: gradient saliency deconvnet guided-backprop cam grad-cam
    /// counterfactual-grad-cam guided-grad-cam occlusion, or all. Repeatable.
    #[arg(long = "method", default_value = "grad-cam")]
    pub methods: Vec<String>,
    /// top1, one class for every item, or one class per item (C1,C2,...).
    #[arg(long, default_value = "top1")]
    pub target: String,
    /// The layer Grad-CAM taps (default: the model's last rectified conv map).
    #[arg(long)]
    pub layer: Option<String>,
    /// Output folder.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Also write the raw maps as <stem>.<method>.npy.
    #[arg(long)]
    pub npy: bool,
    /// Occlusion window side (pixels).
    #[arg(long, default_value_t = 16)]
    pub occlusion_window: usize,
    /// Occlusion stride (pixels).
    #[arg(long, default_value_t = 8)]
    pub occlusion_stride: usize,
    /// Value of occluded pixels (in the normalised input space).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub occlusion_baseline: f64,
    /// Colormap for heat maps: jet, viridis, turbo, diverging, gray.
    #[arg(long, default_value = "jet")]
    pub colormap: String,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn explain(args: ExplainArgs) -> Result<()> {
    let methods = parse_methods(&args.methods)?;
    let target = parse_target(&args.target)?;
    let colormap = parse_colormap(&args.colormap)?;
    let (arch, net) = inputs::load_model(&args.source.arch, &args.source.weights)?;
    if let Some(l) = &args.layer {
        net.check_layer(l)?;
    }
    let batch = inputs::load_batch(&args.source, net.input_shape()[0])?;
    let scores = net.forward(batch.x.view())?;
    let resolved = target.resolve(scores.view())?;
    let probs = inputs::softmax(&scores);
    let settings = Settings {
        layer: args.layer.clone(),
        occlusion: Occlusion::new(args.occlusion_window, args.occlusion_stride)
            .baseline(args.occlusion_baseline),
    };
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
        for (&m, map) in methods.iter().zip(&maps) {
            let img = render(m, map, i, &batch.photos[i], colormap)?;
            let name = format!("{stem}.{}.png", m.name());
            out.png(name.clone(), img.clone());
            files[i].push(name);
            tiles.push(img);
        }
        if methods.len() > 1 {
            let mut headers = vec!["original".to_string()];
            headers.extend(methods.iter().map(|m| m.name().to_string()));
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
    let summary = json!({
        "arch": arch.name(),
        "methods": methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "layers": layers,
        "warnings": warnings,
        "items": items,
    });
    println!("{summary}");
    Ok(())
}

/// The layer a method's map is at: the map's own for layer maps, Grad-CAM's for
/// Guided Grad-CAM, none for other input-space maps.
pub fn map_layer_name<M: LayerTap<f32>>(
    m: Method,
    map: &AttributionMap<f32>,
    s: &Settings,
    net: &M,
) -> Option<String> {
    match (&map.layout, m) {
        (MapLayout::Layer { name }, _) => Some(name.clone()),
        (_, Method::GuidedGradCam) => Some(s.layer.clone().unwrap_or_else(|| net.default_layer())),
        _ => None,
    }
}

/// [`map_layer_name`] as JSON.
pub fn map_layer<M: LayerTap<f32>>(
    m: Method,
    map: &AttributionMap<f32>,
    s: &Settings,
    net: &M,
) -> Value {
    map_layer_name(m, map, s, net).map_or(Value::Null, Value::String)
}

/// The layer each map is at (`null` for maps in input space that use no layer), and
/// warnings about layers that make a method's map say little.
fn layers_and_warnings(
    net: &Network<f32>,
    methods: &[Method],
    maps: &[AttributionMap<f32>],
    s: &Settings,
) -> Result<(serde_json::Map<String, Value>, Vec<String>)> {
    let mut layers = serde_json::Map::new();
    let mut warnings = Vec::new();
    for (&m, map) in methods.iter().zip(maps) {
        let layer = map_layer_name(m, map, s, net);
        if let (Method::Cam, Some(asked), Some(used)) = (m, &s.layer, &layer) {
            if asked != used {
                warnings.push(format!(
                    "cam is defined at the layer feeding the global-average-pool head, `{used}`; --layer {asked} applies to the Grad-CAM methods"
                ));
            }
        }
        if matches!(
            m,
            Method::GradCam | Method::CounterfactualGradCam | Method::GuidedGradCam
        ) {
            if let Some(l) = &layer {
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
