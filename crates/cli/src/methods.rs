//! The methods as the CLI offers them: one registry (name, family, what it is), the
//! options they take, running one on a batch, and drawing its map. Every command
//! (`explain`, `caption`, `vqa`, `demo`, `bench`) goes through here, so a new method
//! is one entry in [`REGISTRY`] and one arm in [`attribute`].

use std::sync::Arc;

use attrib_core::{Attribution, AttributionMap, Error, LayerTap, MapLayout, Result, Target};
use attrib_methods::{
    AblationCam, AtLayer, Cam, Deconvnet, EigenCam, GradCam, GradCamPlusPlus, Gradient,
    GuidedBackprop, GuidedGradCam, HiResCam, InputXGradient, IntegratedGradients, Interpolation,
    LayerCam, MultiLayer, NoiseKind, NoiseTunnel, Occlusion, Saliency, ScoreCam, XGradCam,
};
use attrib_viz::{
    io::colormap_image, normalize, render, upsample_normalized, Colormap, Normalization,
};
use clap::Args;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array3, Array4, Axis, Ix3, Ix4};
use serde_json::Value;

/// A method the CLI runs.
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
    GradCamPlusPlus,
    XGradCam,
    LayerCam,
    HiResCam,
    ScoreCam,
    AblationCam,
    EigenCam,
    IntegratedGradients,
    InputXGradient,
}

/// Which group a method belongs to, for `all`, `cams` and `gradients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// In the Grad-CAM paper (`all`).
    Paper,
    /// Another CAM variant.
    Cam,
    /// Another input-space gradient method.
    Gradient,
}

/// One method: CLI name, the method, its family, whether it is a CAM computed at a
/// layer (`cams`), whether its map is in input space (`gradients`; a noise tunnel
/// applies to these).
pub struct Entry {
    pub name: &'static str,
    pub method: Method,
    pub family: Family,
    pub at_layer: bool,
    pub input_space: bool,
    /// One line on what it computes.
    pub about: &'static str,
}

const fn e(
    name: &'static str,
    method: Method,
    family: Family,
    at_layer: bool,
    input_space: bool,
    about: &'static str,
) -> Entry {
    Entry {
        name,
        method,
        family,
        at_layer,
        input_space,
        about,
    }
}

/// Every method, in the order `all`, `cams` and `gradients` list them.
pub const REGISTRY: [Entry; 18] = [
    e(
        "gradient",
        Method::Gradient,
        Family::Paper,
        false,
        true,
        "dS/dI, signed, per input channel (the paper's vanilla backprop)",
    ),
    e(
        "saliency",
        Method::Saliency,
        Family::Paper,
        false,
        true,
        "max over channels of |dS/dI| (Simonyan et al.)",
    ),
    e(
        "deconvnet",
        Method::Deconvnet,
        Family::Paper,
        false,
        true,
        "Zeiler and Fergus's backward rule through ReLUs",
    ),
    e(
        "guided-backprop",
        Method::GuidedBackprop,
        Family::Paper,
        false,
        true,
        "Springenberg et al.'s guided backward rule",
    ),
    e(
        "cam",
        Method::Cam,
        Family::Paper,
        true,
        false,
        "class activation map (Zhou et al.); needs a GAP + linear head",
    ),
    e(
        "grad-cam",
        Method::GradCam,
        Family::Paper,
        true,
        false,
        "ReLU(sum_k alpha_k A^k), alpha = spatial mean of dS/dA",
    ),
    e(
        "counterfactual-grad-cam",
        Method::CounterfactualGradCam,
        Family::Paper,
        true,
        false,
        "Grad-CAM with negated gradients (the paper's Sec. 5.3)",
    ),
    e(
        "guided-grad-cam",
        Method::GuidedGradCam,
        Family::Paper,
        false,
        true,
        "guided backprop times the upsampled Grad-CAM map",
    ),
    e(
        "occlusion",
        Method::Occlusion,
        Family::Paper,
        false,
        false,
        "score drop when a window is occluded (Zeiler and Fergus)",
    ),
    e(
        "grad-cam-plus-plus",
        Method::GradCamPlusPlus,
        Family::Cam,
        true,
        false,
        "Grad-CAM++ (Chattopadhyay et al.): higher-order weights",
    ),
    e(
        "xgrad-cam",
        Method::XGradCam,
        Family::Cam,
        true,
        false,
        "XGrad-CAM (Fu et al.): activation-weighted gradient means",
    ),
    e(
        "layer-cam",
        Method::LayerCam,
        Family::Cam,
        true,
        false,
        "LayerCAM (Jiang et al.): ReLU(dS/dA) * A per position",
    ),
    e(
        "hires-cam",
        Method::HiResCam,
        Family::Cam,
        true,
        false,
        "HiResCAM (Draelos and Carin): sum_k dS/dA^k * A^k",
    ),
    e(
        "score-cam",
        Method::ScoreCam,
        Family::Cam,
        true,
        false,
        "Score-CAM (Wang et al.): softmaxed scores of channel-masked inputs",
    ),
    e(
        "ablation-cam",
        Method::AblationCam,
        Family::Cam,
        true,
        false,
        "Ablation-CAM (Desai and Ramaswamy): score drop per zeroed channel",
    ),
    e(
        "eigen-cam",
        Method::EigenCam,
        Family::Cam,
        true,
        false,
        "Eigen-CAM (Muhammad and Yeasin): first principal component",
    ),
    e(
        "integrated-gradients",
        Method::IntegratedGradients,
        Family::Gradient,
        false,
        true,
        "Integrated Gradients (Sundararajan et al.)",
    ),
    e(
        "input-x-gradient",
        Method::InputXGradient,
        Family::Gradient,
        false,
        true,
        "input times dS/dI (Shrikumar et al.)",
    ),
];

impl Method {
    fn entry(self) -> &'static Entry {
        REGISTRY
            .iter()
            .find(|e| e.method == self)
            .expect("every method is registered")
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// Whether its map is in input space (a noise tunnel applies).
    pub fn input_space(self) -> bool {
        self.entry().input_space
    }
}

/// The `attrib methods` listing: one line per method, its family and what it computes.
pub fn listing() -> String {
    let mut out = String::new();
    for e in &REGISTRY {
        let family = match e.family {
            Family::Paper => "all",
            Family::Cam => "cams",
            Family::Gradient => "gradients",
        };
        let mut groups = vec![family];
        if e.family == Family::Paper && e.at_layer {
            groups.push("cams");
        }
        if e.family == Family::Paper && e.input_space && e.method != Method::GuidedGradCam {
            groups.push("gradients");
        }
        out.push_str(&format!(
            "{:<24} {:<16} {}\n",
            e.name,
            groups.join(","),
            e.about
        ));
    }
    out
}

/// `--method` values (repeated or comma-separated; `all` for the paper's, `cams`,
/// `gradients`) to methods. The groups leave out `inapplicable` (CAM, for models
/// without a GAP + linear head); named explicitly, those still run and say why they
/// cannot.
pub fn parse_methods(list: &[String], inapplicable: &[Method]) -> Result<Vec<Method>> {
    let mut out = Vec::new();
    for name in list
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let group: Option<fn(&Entry) -> bool> = match name {
            "all" => Some(|e| e.family == Family::Paper),
            "cams" => Some(|e| e.at_layer),
            "gradients" => Some(|e| e.input_space && e.method != Method::GuidedGradCam),
            _ => None,
        };
        if let Some(keep) = group {
            out.extend(
                REGISTRY
                    .iter()
                    .filter(|e| keep(e) && !inapplicable.contains(&e.method))
                    .map(|e| e.method),
            );
            continue;
        }
        let m = REGISTRY
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.method)
            .ok_or_else(|| {
                Error::param(
                    "--method",
                    format!(
                        "unknown `{name}`; valid: {}, all, cams, gradients",
                        REGISTRY.map(|e| e.name).join(", ")
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

/// The options of the methods, shared by every command.
#[derive(Debug, Args, Clone)]
pub struct MethodArgs {
    /// The layer the CAM methods use (default: the model's last rectified conv map).
    /// Repeat it for several layers: the CAM methods then combine them as
    /// pytorch-grad-cam does (the mean of the normalised maps).
    #[arg(long = "layer")]
    pub layers: Vec<String>,
    /// Occlusion window side (pixels).
    #[arg(long)]
    pub occlusion_window: Option<usize>,
    /// Occlusion stride (pixels).
    #[arg(long)]
    pub occlusion_stride: Option<usize>,
    /// Value of occluded pixels (in the normalised input space).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub occlusion_baseline: f64,
    /// Integrated gradients: path points.
    #[arg(long, default_value_t = 50)]
    pub ig_steps: usize,
    /// Integrated gradients: gausslegendre, riemann_left, riemann_right,
    /// riemann_middle, riemann_trapezoid.
    #[arg(long, default_value = "gausslegendre")]
    pub ig_method: String,
    /// Integrated gradients: the constant baseline (in the normalised input space).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub baseline: f64,
    /// A noise tunnel over the input-space methods: smoothgrad, smoothgrad-sq or
    /// vargrad.
    #[arg(long)]
    pub noise_tunnel: Option<String>,
    /// Noise tunnel: noisy samples per image.
    #[arg(long, default_value_t = 10)]
    pub noise_samples: usize,
    /// Noise tunnel: the noise's standard deviation (in the normalised input space).
    #[arg(long, default_value_t = 0.15, allow_negative_numbers = true)]
    pub noise_std: f64,
    /// Noise tunnel: the seed (the same maps for the same seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Guided Grad-CAM's upsampling: bilinear (the paper's) or nearest (Captum's
    /// default).
    #[arg(long, default_value = "bilinear")]
    pub interpolate: String,
}

/// A noise tunnel's settings.
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    pub kind: NoiseKind,
    pub samples: usize,
    pub std: f64,
    pub seed: u64,
}

/// How the methods are configured.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The CAM methods' layers (none: the model's default).
    pub layers: Vec<String>,
    pub occlusion: Occlusion,
    pub ig: IntegratedGradients,
    pub noise: Option<Noise>,
    pub interpolation: Interpolation,
    /// Grad-CAM's map per channel (no channel sum, no ReLU), `(N, C, h, w)`.
    pub per_channel: bool,
}

impl Settings {
    /// Defaults, with occlusion windows of `window` at `stride`.
    pub fn new(window: usize, stride: usize) -> Self {
        Settings {
            layers: Vec::new(),
            occlusion: Occlusion::new(window, stride),
            ig: IntegratedGradients::new(),
            noise: None,
            interpolation: Interpolation::Bilinear,
            per_channel: false,
        }
    }

    /// From the command line; `window` and `stride` are the command's occlusion
    /// defaults.
    pub fn from_args(a: &MethodArgs, window: usize, stride: usize) -> Result<Self> {
        let noise = a
            .noise_tunnel
            .as_deref()
            .map(|k| -> Result<Noise> {
                Ok(Noise {
                    kind: k.parse()?,
                    samples: a.noise_samples,
                    std: a.noise_std,
                    seed: a.seed,
                })
            })
            .transpose()?;
        Ok(Settings {
            layers: a.layers.clone(),
            occlusion: Occlusion::new(
                a.occlusion_window.unwrap_or(window),
                a.occlusion_stride.unwrap_or(stride),
            )
            .baseline(a.occlusion_baseline),
            ig: IntegratedGradients::new()
                .steps(a.ig_steps)
                .method(a.ig_method.parse()?)
                .baseline(a.baseline),
            noise,
            interpolation: a.interpolate.parse()?,
            per_channel: false,
        })
    }

    /// Whether the settings apply to `methods`, checked before any of them runs.
    pub fn check(&self, methods: &[Method]) -> Result<()> {
        if self.noise.is_some() {
            if let Some(m) = methods.iter().find(|m| !m.input_space()) {
                return Err(noise_not_applicable(*m));
            }
        }
        Ok(())
    }

    /// The one layer a single-layer method uses (`None`: the default); several are
    /// an error for `what`.
    fn one_layer(&self, what: &str) -> Result<Option<&str>> {
        match self.layers.as_slice() {
            [] => Ok(None),
            [l] => Ok(Some(l)),
            _ => Err(Error::param(
                "--layer",
                format!("{what} takes one layer, not {}", self.layers.len()),
            )),
        }
    }
}

fn noise_not_applicable(m: Method) -> Error {
    Error::param(
        "--noise-tunnel",
        format!(
            "applies to the input-space methods (gradients, guided-grad-cam); {} is not one",
            m.name()
        ),
    )
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

/// A CAM method at the settings' layer, or combined over several.
fn cam_at<M, A>(
    method: A,
    s: &Settings,
    net: &M,
    x: &Array4<f32>,
    t: &Target<f32>,
) -> Result<AttributionMap<f32>>
where
    M: LayerTap<f32>,
    A: AtLayer + Attribution<f32, M>,
{
    match s.layers.as_slice() {
        [] => method.attribute(net, x.view(), t),
        [l] => method.at_layer(l).attribute(net, x.view(), t),
        many => MultiLayer::new(method, many.to_vec()).attribute(net, x.view(), t),
    }
}

/// An input-space method, under the settings' noise tunnel if one is set.
fn input_space<M, A>(
    method: A,
    s: &Settings,
    net: &M,
    x: &Array4<f32>,
    t: &Target<f32>,
) -> Result<AttributionMap<f32>>
where
    M: LayerTap<f32>,
    A: Attribution<f32, M> + for<'x> Attribution<f32, attrib_methods::rows::ItemRows<'x, M>>,
{
    match s.noise {
        None => method.attribute(net, x.view(), t),
        Some(n) => NoiseTunnel::new(method, n.kind)
            .samples(n.samples)
            .std(n.std)
            .seed(n.seed)
            .attribute(net, x.view(), t),
    }
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
    let v = x.view();
    if s.noise.is_some() && !m.input_space() {
        return Err(noise_not_applicable(m));
    }
    match m {
        Method::Gradient => input_space(Gradient, s, net, x, target),
        Method::Saliency => input_space(Saliency, s, net, x, target),
        Method::Deconvnet => input_space(Deconvnet, s, net, x, target),
        Method::GuidedBackprop => input_space(GuidedBackprop, s, net, x, target),
        Method::InputXGradient => input_space(InputXGradient, s, net, x, target),
        Method::IntegratedGradients => input_space(s.ig.clone(), s, net, x, target),
        Method::GuidedGradCam => {
            let g = match s.one_layer("guided-grad-cam")? {
                Some(l) => GradCam::new().layer(l),
                None => GradCam::new(),
            };
            input_space(
                GuidedGradCam::with_grad_cam(g).interpolate(s.interpolation),
                s,
                net,
                x,
                target,
            )
        }
        Method::Cam => Cam.attribute(net, v, target),
        Method::GradCam | Method::CounterfactualGradCam if s.per_channel => {
            let g = if m == Method::GradCam {
                GradCam::new()
            } else {
                GradCam::counterfactual()
            };
            match s.one_layer("--per-channel")? {
                Some(l) => g.layer(l),
                None => g,
            }
            .per_channel()
            .attribute(net, v, target)
        }
        Method::GradCam => cam_at(GradCam::new(), s, net, x, target),
        Method::CounterfactualGradCam => cam_at(GradCam::counterfactual(), s, net, x, target),
        Method::GradCamPlusPlus => cam_at(GradCamPlusPlus::new(), s, net, x, target),
        Method::XGradCam => cam_at(XGradCam::new(), s, net, x, target),
        Method::LayerCam => cam_at(LayerCam::new(), s, net, x, target),
        Method::HiResCam => cam_at(HiResCam::new(), s, net, x, target),
        Method::ScoreCam => cam_at(ScoreCam::new(), s, net, x, target),
        Method::AblationCam => cam_at(AblationCam::new(), s, net, x, target),
        Method::EigenCam => cam_at(EigenCam::new(), s, net, x, target),
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
/// colormapped (saliency) or overlaid (occlusion, several layers combined).
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
            if m == Method::Saliency {
                // Saliency is peaky: clip at the 99th percentile, as Captum's
                // visualiser does by default (outlier_perc=2 clips a little more).
                let n = normalize(v.index_axis(Axis(0), i), Normalization::Percentile(99.0));
                colormap_image(n.view(), cmap)
            } else {
                let n = normalize(v.index_axis(Axis(0), i), Normalization::MinMax);
                render::overlay(photo.view(), n.view(), cmap, 0.5)
            }
        }
        MapLayout::LayerChannels { name } => {
            return Err(Error::unsupported(
                m.name(),
                format!("per-channel maps at `{name}` have no picture; write them with --npy"),
            ))
        }
    })
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
        (MapLayout::Layer { name } | MapLayout::LayerChannels { name }, _) => Some(name.clone()),
        (MapLayout::Pixel, _) if s.layers.len() > 1 && m.entry().at_layer => {
            Some(s.layers.join("+"))
        }
        (_, Method::GuidedGradCam) => Some(
            s.layers
                .first()
                .cloned()
                .unwrap_or_else(|| net.default_layer()),
        ),
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

/// Whether the method is computed at a layer (for warnings about 1x1 layers).
pub fn at_layer(m: Method) -> bool {
    m.entry().at_layer && m != Method::Cam
}
