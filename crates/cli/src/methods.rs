//! The methods as the CLI offers them: the registry of `attrib_methods::registry`
//! (plus any methods a program adds with [`crate::main_with`]), the options they
//! take, running one on a batch, and drawing its map. Every command (`explain`,
//! `caption`, `vqa`, `demo`, `bench`) goes through here, and every method parameter
//! becomes a flag of every command, so a method is offered by its registry entry
//! alone.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use attrib_core::{Attribution, AttributionMap, Error, LayerTap, MapLayout, Result, Target};
use attrib_methods::registry::{MethodInfo, Output, Param, Params, BUILT_IN, GROUPS};
use attrib_methods::{combine_layers, NoiseKind, NoiseTunnel};
use attrib_viz::{
    io::colormap_image, normalize, render, upsample_normalized, Colormap, Normalization,
};
use clap::{ArgMatches, Args, FromArgMatches};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array3, Array4, Axis, Ix3, Ix4};
use serde_json::Value;

/// A method the CLI runs: an entry of the registry.
#[derive(Clone, Copy)]
pub struct Method(&'static MethodInfo);

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Method {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Its registry entry.
    pub fn info(self) -> &'static MethodInfo {
        self.0
    }

    /// Whether its map is in the input's space, per channel or per pixel (a noise
    /// tunnel applies).
    pub fn input_space(self) -> bool {
        self.0.output != Output::Layer
    }

    /// A built-in method the CLI itself refers to (the demo's).
    pub(crate) fn builtin(name: &str) -> Method {
        Method(
            BUILT_IN
                .iter()
                .find(|m| m.name == name)
                .expect("a built-in method name"),
        )
    }
}

static EXTRA: OnceLock<Vec<&'static MethodInfo>> = OnceLock::new();

/// Adds `extra` to the methods this program offers (once, before the command line is
/// parsed). A name that is already taken is an error.
pub fn register(extra: &'static [MethodInfo]) -> Result<()> {
    for (i, m) in extra.iter().enumerate() {
        if BUILT_IN.iter().any(|b| b.name == m.name)
            || extra[..i].iter().any(|b| b.name == m.name)
            || GROUPS.contains(&m.name)
        {
            return Err(Error::param(
                "methods",
                format!("`{}` is registered twice", m.name),
            ));
        }
    }
    EXTRA
        .set(extra.iter().collect())
        .map_err(|_| Error::param("methods", "extra methods are registered once"))
}

/// Every method, the built-in ones first, in the order the groups list them.
pub fn all_methods() -> Vec<Method> {
    BUILT_IN
        .iter()
        .chain(EXTRA.get().into_iter().flatten().copied())
        .map(Method)
        .collect()
}

/// The `attrib methods` listing: one line per method, its groups and what it
/// computes, then its parameters.
pub fn listing() -> String {
    let mut out = String::new();
    for m in all_methods() {
        let info = m.info();
        let groups = info.groups.join(",");
        out.push_str(&format!(
            "{:<24} {:<16} {}\n",
            info.name,
            if groups.is_empty() { "-" } else { &groups },
            info.about
        ));
    }
    out
}

/// `--method` values (repeated or comma-separated; `all` for the paper's, `cams`,
/// `gradients`) to methods. The groups leave out methods that need a GAP + linear
/// head when the model has none (CAM); named explicitly, those still run and say
/// why they cannot.
pub fn parse_methods(list: &[String], has_linear_head: bool) -> Result<Vec<Method>> {
    let all = all_methods();
    let mut out = Vec::new();
    for name in list
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if GROUPS.contains(&name) {
            out.extend(all.iter().copied().filter(|m| {
                m.info().groups.contains(&name) && (has_linear_head || !m.info().needs_linear_head)
            }));
            continue;
        }
        let m = all
            .iter()
            .copied()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                Error::param(
                    "--method",
                    format!(
                        "unknown `{name}`; valid: {}, all, cams, gradients",
                        all.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
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

/// The options of the methods, shared by every command: the layers, a noise tunnel,
/// and every registered method's parameters.
#[derive(Debug, Args, Clone)]
pub struct MethodArgs {
    /// The layer the methods computed at a layer use (default: the model's last
    /// rectified conv map). Repeat it for several layers: the CAM methods then
    /// combine them as pytorch-grad-cam does (the mean of the normalised maps).
    #[arg(long = "layer")]
    pub layers: Vec<String>,
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
    #[command(flatten)]
    pub params: ParamArgs,
}

/// The registered methods' parameters as flags (`--ig-steps`, `--interpolate`, ...):
/// the values given on the command line, by name.
#[derive(Debug, Clone, Default)]
pub struct ParamArgs {
    /// Parameter values given explicitly.
    pub given: BTreeMap<String, String>,
}

/// Every distinct parameter of the registered methods, with the methods taking it.
fn all_params() -> Vec<(Param, Vec<&'static str>)> {
    let mut out: Vec<(Param, Vec<&'static str>)> = Vec::new();
    for m in all_methods() {
        for p in m.info().params {
            match out.iter_mut().find(|(q, _)| q.name == p.name) {
                Some((_, users)) => users.push(m.name()),
                None => out.push((*p, vec![m.name()])),
            }
        }
    }
    out
}

impl FromArgMatches for ParamArgs {
    fn from_arg_matches(m: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        let mut given = BTreeMap::new();
        for (p, _) in all_params() {
            if p.flag {
                if m.get_flag(p.name) {
                    given.insert(p.name.to_string(), "true".to_string());
                }
            } else if let Some(v) = m.get_one::<String>(p.name) {
                given.insert(p.name.to_string(), v.clone());
            }
        }
        Ok(ParamArgs { given })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for ParamArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        all_params().into_iter().fold(cmd, |cmd, (p, users)| {
            let help = format!("{} [{}]", p.help, users.join(", "));
            let arg = clap::Arg::new(p.name).long(p.name).help(help);
            cmd.arg(if p.flag {
                arg.action(clap::ArgAction::SetTrue)
            } else {
                arg.value_name("VALUE")
                    .allow_negative_numbers(true)
                    .help(format!(
                        "{} [{}; default {}]",
                        p.help,
                        users.join(", "),
                        p.default
                    ))
            })
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
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
    /// The layers of the methods computed at a layer (none: the model's default).
    pub layers: Vec<String>,
    /// Parameter values: those given, then the command's defaults.
    pub params: Params,
    /// The parameters given explicitly.
    given: Vec<String>,
    pub noise: Option<Noise>,
}

impl Settings {
    /// Defaults, with occlusion windows of `window` at `stride`.
    pub fn new(window: usize, stride: usize) -> Self {
        Settings {
            layers: Vec::new(),
            params: Params::new()
                .set("occlusion-window", window.to_string())
                .set("occlusion-stride", stride.to_string()),
            given: Vec::new(),
            noise: None,
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
        let mut params = Params::new();
        for (k, v) in &a.params.given {
            params = params.set(k, v.clone());
        }
        params = params
            .set_default("occlusion-window", window.to_string())
            .set_default("occlusion-stride", stride.to_string());
        Ok(Settings {
            layers: a.layers.clone(),
            params,
            given: a.params.given.keys().cloned().collect(),
            noise,
        })
    }

    /// `m`'s parameters as it runs with these settings: `{name: value}`.
    pub fn describe(&self, m: Method) -> Value {
        let values = self.params.values();
        Value::Object(
            m.info()
                .params
                .iter()
                .map(|p| {
                    let v = values.get(p.name).map_or(p.default, String::as_str);
                    (p.name.to_string(), Value::String(v.to_string()))
                })
                .collect(),
        )
    }

    /// Whether a switch is on (false when unknown or unreadable).
    pub fn flag(&self, p: &Param) -> bool {
        self.params.flag(p).unwrap_or(false)
    }

    /// Whether the settings apply to `methods`, checked before any of them runs:
    /// a noise tunnel only over input-space methods, every parameter given taken by
    /// one of them, several layers only for the CAM methods, and every method built
    /// (so a parameter that does not parse fails here).
    pub fn check(&self, methods: &[Method]) -> Result<()> {
        if self.noise.is_some() {
            if let Some(m) = methods.iter().find(|m| !m.input_space()) {
                return Err(noise_not_applicable(*m));
            }
        }
        for name in &self.given {
            if !methods
                .iter()
                .any(|m| m.info().params.iter().any(|p| p.name == name))
            {
                let users: Vec<&str> = all_methods()
                    .into_iter()
                    .filter(|m| m.info().params.iter().any(|p| p.name == name))
                    .map(Method::name)
                    .collect();
                return Err(Error::param(
                    format!("--{name}"),
                    format!("applies to {}, and none is asked for", users.join(", ")),
                ));
            }
        }
        for m in methods {
            if self.layers.len() > 1 && m.info().at_layer {
                if m.info().output != Output::Layer {
                    return Err(Error::param(
                        "--layer",
                        format!("{} takes one layer, not {}", m.name(), self.layers.len()),
                    ));
                }
                if self.flag(&attrib_methods::registry::PER_CHANNEL) {
                    return Err(Error::param(
                        "--layer",
                        "per-channel maps are at one layer; give one --layer",
                    ));
                }
            }
            m.info().build(&self.params)?;
        }
        Ok(())
    }
}

fn noise_not_applicable(m: Method) -> Error {
    Error::param(
        "--noise-tunnel",
        format!(
            "applies to the input-space methods (gradients, guided-grad-cam, occlusion); {} is not one",
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

/// Runs one method on the batch: at each `--layer` (combined when several), under
/// the noise tunnel when one is set.
pub fn attribute<M: LayerTap<f32>>(
    net: &M,
    m: Method,
    x: &Array4<f32>,
    target: &Target<f32>,
    s: &Settings,
    quiet: bool,
) -> Result<AttributionMap<f32>> {
    let info = m.info();
    if s.noise.is_some() && !m.input_space() {
        return Err(noise_not_applicable(m));
    }
    // A bar for the methods that report progress (occlusion), made on first report.
    let bar: Arc<OnceLock<ProgressBar>> = Arc::new(OnceLock::new());
    let b = bar.clone();
    let name = m.name();
    let progress = Arc::new(move |done: usize, total: usize| {
        let pb = b.get_or_init(|| progress_bar(quiet, total as u64, name));
        pb.set_position(done as u64);
    });
    let run = |layer: Option<&str>| -> Result<AttributionMap<f32>> {
        let params = s
            .params
            .clone()
            .with_layer(layer)
            .with_progress(progress.clone());
        let method = info.build(&params)?;
        match s.noise {
            None => method.attribute(net, x.view(), target),
            Some(n) => NoiseTunnel::new(method, n.kind)
                .samples(n.samples)
                .std(n.std)
                .seed(n.seed)
                .attribute(net, x.view(), target),
        }
    };
    let r = match (
        info.at_layer && !info.needs_linear_head,
        s.layers.as_slice(),
    ) {
        (false, _) | (true, []) => run(None),
        (true, [l]) => run(Some(l)),
        (true, many) => {
            if info.output != Output::Layer {
                return Err(Error::param(
                    "--layer",
                    format!("{} takes one layer, not {}", m.name(), many.len()),
                ));
            }
            let maps = many
                .iter()
                .map(|l| run(Some(l)))
                .collect::<Result<Vec<_>>>()?;
            let (_, _, h, w) = x.dim();
            combine_layers(maps, h, w)
        }
    };
    if let Some(pb) = bar.get() {
        pb.finish_and_clear();
    }
    r
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
            if m.info().peaky {
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
        (MapLayout::Pixel, _) if s.layers.len() > 1 && m.info().at_layer => {
            Some(s.layers.join("+"))
        }
        (MapLayout::Input, _) if m.info().at_layer => Some(
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
    m.info().at_layer && !m.info().needs_linear_head
}
