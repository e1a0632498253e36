//! Every method by name, with what a front end needs to offer it: a one-line
//! description, its reference, where its map lives, the parameters it takes (name,
//! help, default) and a constructor from their values. The `attrib` command builds
//! its `--method` names, groups, help and parameter flags from [`BUILT_IN`] (plus any
//! [`MethodInfo`]s a program adds, see `attrib_cli::main_with`), so a method is
//! offered everywhere by one entry here.
//!
//! The constructors return [`BoxedMethod`]: a method usable on any model, in f32 and
//! f64, through `dyn LayerTap`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use attrib_core::{Attribution, AttributionMap, Error, LayerTap, Result, Scalar, Target};
use ndarray::ArrayView4;

use crate::{
    AblationCam, Cam, Deconvnet, EigenCam, GradCam, GradCamPlusPlus, Gradient, GuidedBackprop,
    GuidedGradCam, HiResCam, InputXGradient, IntegratedGradients, LayerCam, Occlusion, Saliency,
    ScoreCam, XGradCam,
};

/// An [`Attribution`] behind `dyn`: on any model seen as `dyn LayerTap<F>`.
/// Implemented for every method that is an `Attribution` on every `LayerTap`.
pub trait DynAttribution<F: Scalar>: Send + Sync {
    /// The method's name.
    fn dyn_name(&self) -> &'static str;
    /// [`Attribution::attribute`] on `model`.
    fn attribute_dyn(
        &self,
        model: &dyn LayerTap<F>,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>>;
}

impl<F: Scalar, A> DynAttribution<F> for A
where
    A: Send + Sync + for<'a> Attribution<F, dyn LayerTap<F> + 'a>,
{
    fn dyn_name(&self) -> &'static str {
        Attribution::<F, dyn LayerTap<F>>::name(self)
    }

    fn attribute_dyn(
        &self,
        model: &dyn LayerTap<F>,
        input: ArrayView4<F>,
        target: &Target<F>,
    ) -> Result<AttributionMap<F>> {
        self.attribute(model, input, target)
    }
}

/// A method in both element types.
pub trait AnyMethod: DynAttribution<f32> + DynAttribution<f64> {}

impl<T: DynAttribution<f32> + DynAttribution<f64>> AnyMethod for T {}

/// What a registry constructor returns. It is itself an [`Attribution`] on every
/// (sized) model, so it composes with the wrappers (`NoiseTunnel`, ...).
pub type BoxedMethod = Box<dyn AnyMethod>;

macro_rules! boxed_attribution {
    ($($f:ty),*) => {$(
        impl<M: LayerTap<$f>> Attribution<$f, M> for BoxedMethod {
            fn name(&self) -> &'static str {
                DynAttribution::<$f>::dyn_name(&**self)
            }

            fn attribute(
                &self,
                model: &M,
                input: ArrayView4<$f>,
                target: &Target<$f>,
            ) -> Result<AttributionMap<$f>> {
                DynAttribution::<$f>::attribute_dyn(&**self, model, input, target)
            }
        }
    )*};
}

boxed_attribution!(f32, f64);

/// The groups front ends offer: `all` (the Grad-CAM paper's methods), `cams` (the
/// CAM family, maps at a layer), `gradients` (input-space methods of the gradient
/// family).
pub const GROUPS: [&str; 3] = ["all", "cams", "gradients"];

/// Where a method's map lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `(N, C, H, W)`, the input's space (a noise tunnel applies).
    Input,
    /// `(N, h, w)` at a layer (several layers combine).
    Layer,
    /// `(N, H, W)`, one value per pixel.
    Pixel,
}

/// A parameter a method takes: its flag name (without `--`), help, and default (a
/// flag's is `"false"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// The name, e.g. `ig-steps`.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// The default value, as text.
    pub default: &'static str,
    /// A switch without a value.
    pub flag: bool,
}

impl Param {
    /// A parameter with a value.
    pub const fn value(name: &'static str, help: &'static str, default: &'static str) -> Self {
        Param {
            name,
            help,
            default,
            flag: false,
        }
    }

    /// A switch.
    pub const fn flag(name: &'static str, help: &'static str) -> Self {
        Param {
            name,
            help,
            default: "false",
            flag: true,
        }
    }
}

/// Reports progress `(done, total)`.
pub type Progress = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// The values a method is built with: parameters by name (text, parsed by the
/// method), the layer, and a progress callback for long methods.
#[derive(Clone, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
    layer: Option<String>,
    progress: Option<Progress>,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("values", &self.values)
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl Params {
    /// No values: every parameter at its default, the model's default layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets parameter `name`.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.values.insert(name.to_string(), value.into());
        self
    }

    /// Sets parameter `name` only if it has no value yet (a front end's own default).
    pub fn set_default(mut self, name: &str, value: impl Into<String>) -> Self {
        self.values
            .entry(name.to_string())
            .or_insert_with(|| value.into());
        self
    }

    /// At `layer` (for methods at a layer).
    pub fn with_layer(mut self, layer: Option<&str>) -> Self {
        self.layer = layer.map(str::to_string);
        self
    }

    /// With a progress callback.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The layer, if one was given.
    pub fn layer(&self) -> Option<&str> {
        self.layer.as_deref()
    }

    /// The progress callback, if any.
    pub fn progress(&self) -> Option<&Progress> {
        self.progress.as_ref()
    }

    /// The values set, by name.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    /// `p`'s value (its default when unset), parsed; an error names the parameter.
    pub fn get<T: FromStr>(&self, p: &Param) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.values.get(p.name).map_or(p.default, String::as_str);
        text.parse::<T>().map_err(|e| {
            Error::param(
                format!("--{}", p.name),
                format!("cannot read `{text}`: {e}"),
            )
        })
    }

    /// Whether switch `p` is on.
    pub fn flag(&self, p: &Param) -> Result<bool> {
        self.get(p)
    }
}

/// One method as a front end offers it.
#[derive(Clone, Copy)]
pub struct MethodInfo {
    /// The name (`--method`).
    pub name: &'static str,
    /// The groups it belongs to (of [`GROUPS`]).
    pub groups: &'static [&'static str],
    /// One line on what it computes.
    pub about: &'static str,
    /// Where it was published.
    pub reference: &'static str,
    /// Where its map lives.
    pub output: Output,
    /// Whether it is computed at a layer (takes `--layer`).
    pub at_layer: bool,
    /// Whether it needs a GAP + linear head (CAM).
    pub needs_linear_head: bool,
    /// Whether a few pixels dominate its maps, so pictures clip at the 99th
    /// percentile (saliency).
    pub peaky: bool,
    /// Its parameters besides the layer.
    pub params: &'static [Param],
    /// Builds it from parameter values.
    pub build: fn(&Params) -> Result<BoxedMethod>,
}

impl std::fmt::Debug for MethodInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodInfo")
            .field("name", &self.name)
            .field("groups", &self.groups)
            .field("output", &self.output)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PartialEq for MethodInfo {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl MethodInfo {
    /// Builds the method.
    pub fn build(&self, params: &Params) -> Result<BoxedMethod> {
        (self.build)(params)
    }
}

/// Grad-CAM's per-channel maps.
pub const PER_CHANNEL: Param = Param::flag(
    "per-channel",
    "Grad-CAM per channel (alpha_k A^k, no sum, no ReLU): (N, K, h, w), written with --npy",
);
/// Guided Grad-CAM's upsampling.
pub const INTERPOLATE: Param = Param::value(
    "interpolate",
    "Guided Grad-CAM's upsampling of Grad-CAM: bilinear (the paper's) or nearest (Captum's default)",
    "bilinear",
);
/// Occlusion's window side.
pub const OCCLUSION_WINDOW: Param =
    Param::value("occlusion-window", "occlusion window side, pixels", "16");
/// Occlusion's stride.
pub const OCCLUSION_STRIDE: Param =
    Param::value("occlusion-stride", "occlusion stride, pixels", "8");
/// Occlusion's fill value.
pub const OCCLUSION_BASELINE: Param = Param::value(
    "occlusion-baseline",
    "value occluded pixels take (in the model's input space)",
    "0",
);
/// Score-CAM's and Ablation-CAM's copies per forward pass.
pub const CAM_BATCH: Param = Param::value(
    "cam-batch",
    "Score-CAM / Ablation-CAM: perturbed copies per forward pass",
    "32",
);
/// Integrated gradients' steps.
pub const IG_STEPS: Param = Param::value("ig-steps", "integrated gradients: path points", "50");
/// Integrated gradients' quadrature.
pub const IG_METHOD: Param = Param::value(
    "ig-method",
    "integrated gradients: gausslegendre, riemann_left, riemann_right, riemann_middle, riemann_trapezoid",
    "gausslegendre",
);
/// Integrated gradients' baseline.
pub const BASELINE: Param = Param::value(
    "baseline",
    "integrated gradients: constant baseline (in the model's input space)",
    "0",
);
/// Integrated gradients' path points per backward pass.
pub const IG_BATCH: Param = Param::value(
    "ig-batch",
    "integrated gradients: path points per backward pass (memory against speed)",
    "64",
);

fn boxed<A: AnyMethod + 'static>(a: A) -> Result<BoxedMethod> {
    Ok(Box::new(a))
}

fn grad_cam(p: &Params, counterfactual: bool) -> Result<BoxedMethod> {
    let mut g = if counterfactual {
        GradCam::counterfactual()
    } else {
        GradCam::new()
    };
    if let Some(l) = p.layer() {
        g = g.layer(l);
    }
    if p.flag(&PER_CHANNEL)? {
        g = g.per_channel();
    }
    boxed(g)
}

macro_rules! at_layer {
    ($p:expr, $m:expr) => {{
        let m = $m;
        match $p.layer() {
            Some(l) => m.layer(l),
            None => m,
        }
    }};
}

fn cam_batch(p: &Params) -> Result<usize> {
    let n: usize = p.get(&CAM_BATCH)?;
    if n == 0 {
        return Err(Error::param("--cam-batch", "must be positive"));
    }
    Ok(n)
}

/// The built-in methods, in the order `all`, `cams` and `gradients` list them.
pub static BUILT_IN: [MethodInfo; 18] = [
    MethodInfo {
        name: "gradient",
        groups: &["all", "gradients"],
        about: "dS/dI, signed, per input channel (the paper's vanilla backprop)",
        reference: "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks",
        output: Output::Input,
        at_layer: false,
        needs_linear_head: false,
        peaky: false,
        params: &[],
        build: |_| boxed(Gradient),
    },
    MethodInfo {
        name: "saliency",
        groups: &["all", "gradients"],
        about: "max over channels of |dS/dI| (Simonyan et al.)",
        reference: "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks",
        output: Output::Pixel,
        at_layer: false,
        needs_linear_head: false,
        peaky: true,
        params: &[],
        build: |_| boxed(Saliency),
    },
    MethodInfo {
        name: "deconvnet",
        groups: &["all", "gradients"],
        about: "Zeiler and Fergus's backward rule through ReLUs",
        reference: "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
        output: Output::Input,
        at_layer: false,
        needs_linear_head: false,
        peaky: false,
        params: &[],
        build: |_| boxed(Deconvnet),
    },
    MethodInfo {
        name: "guided-backprop",
        groups: &["all", "gradients"],
        about: "Springenberg et al.'s guided backward rule",
        reference: "Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net",
        output: Output::Input,
        at_layer: false,
        needs_linear_head: false,
        peaky: false,
        params: &[],
        build: |_| boxed(GuidedBackprop),
    },
    MethodInfo {
        name: "cam",
        groups: &["all", "cams"],
        about: "class activation map (Zhou et al.); needs a GAP + linear head",
        reference: "Zhou et al. 2016, Learning Deep Features for Discriminative Localization",
        output: Output::Layer,
        at_layer: true,
        needs_linear_head: true,
        peaky: false,
        params: &[],
        build: |_| boxed(Cam),
    },
    MethodInfo {
        name: "grad-cam",
        groups: &["all", "cams"],
        about: "ReLU(sum_k alpha_k A^k), alpha = spatial mean of dS/dA",
        reference: "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
        output: Output::Layer,
        at_layer: true,
        needs_linear_head: false,
        peaky: false,
        params: &[PER_CHANNEL],
        build: |p| grad_cam(p, false),
    },
    MethodInfo {
        name: "counterfactual-grad-cam",
        groups: &["all", "cams"],
        about: "Grad-CAM with negated gradients (the paper's Sec. 5.3)",
        reference: "Selvaraju et al. 2017, Grad-CAM, Sec. 5.3",
        output: Output::Layer,
        at_layer: true,
        needs_linear_head: false,
        peaky: false,
        params: &[PER_CHANNEL],
        build: |p| grad_cam(p, true),
    },
    MethodInfo {
        name: "guided-grad-cam",
        groups: &["all"],
        about: "guided backprop times the upsampled Grad-CAM map",
        reference: "Selvaraju et al. 2017, Grad-CAM",
        output: Output::Input,
        at_layer: true,
        needs_linear_head: false,
        peaky: false,
        params: &[INTERPOLATE],
        build: |p| {
            let g = at_layer!(p, GradCam::new());
            boxed(GuidedGradCam::with_grad_cam(g).interpolate(p.get(&INTERPOLATE)?))
        },
    },
    MethodInfo {
        name: "occlusion",
        groups: &["all"],
        about: "score drop when a window is occluded (Zeiler and Fergus)",
        reference: "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
        output: Output::Pixel,
        at_layer: false,
        needs_linear_head: false,
        peaky: false,
        params: &[OCCLUSION_WINDOW, OCCLUSION_STRIDE, OCCLUSION_BASELINE],
        build: |p| {
            let mut o = Occlusion::new(p.get(&OCCLUSION_WINDOW)?, p.get(&OCCLUSION_STRIDE)?)
                .baseline(p.get(&OCCLUSION_BASELINE)?);
            if let Some(f) = p.progress() {
                let f = f.clone();
                o = o.on_progress(move |done, total| f(done, total));
            }
            boxed(o)
        },
    },
    MethodInfo {
        name: "grad-cam-plus-plus",
        groups: &["cams"],
        about: "Grad-CAM++ (Chattopadhyay et al.): higher-order weights",
        reference: "Chattopadhyay et al. 2018, Grad-CAM++: Generalized Gradient-based Visual Explanations",
        output: Output::Layer,
        at_layer: true,
        needs_linear_head: false,
        peaky: false,
        params: &[],
        build: |p| boxed(at_layer!(p, GradCamPlusPlus::new())),
    },
    MethodInfo {
        name: "xgrad-cam",
        groups: &["cams"],
        about: "XGrad-CAM (Fu et al.): activation-weighted gradient means",
        reference: "Fu et al. 2020, Axiom-based Grad-CAM",
        output: Output::Layer,
        at_layer: true,
        needs_linear_head: false,
        peaky: false,
        params: &[],
        build: |p| boxed(at_layer!(p, XGradCam::new())),
    },
    MethodInfo {
        name: "layer-cam",
        groups: &["cams"],
        about: "LayerCAM (Jiang et al.): ReLU(dS/dA) * A per position",
        reference: "Jiang et al. 2021, LayerCAM: Exploring Hierarchical Class Activation Maps",
        output: Output::Layer,
        at_layer: true,
        needs_linear_head: false,
        peaky: false,
        params: &[],
        build: |p| boxed(at_layer!(p, LayerCam::new())),
    },
    MethodInfo {
        name: "hires-cam",
        groups: &["cams"],
        about: "HiResCAM (Draelos and Carin): sum_k dS/dA^k * A^k",
        reference: "Draelos & Carin 2020, Use HiResCAM instead of Grad-CAM",
        output: Output::Layer,
        at_layer: true,
        needs_linear_head: false,
        peaky: false,
        params: &[],
        build: |p| boxed(at_layer!(p, HiResCam::new())),
    },
    MethodInfo {
        name: "score-cam",
        groups: &["cams"],
        about: "Score-CAM (Wang et al.): softmaxed scores of channel-masked inputs",
        reference: "Wang et al. 2020, Score-CAM: Score-Weighted Visual Explanations",
        output: Output::Layer,
        at_layer: true,
        needs_linear_head: false,
        peaky: false,
        params: &[CAM_BATCH],
        build: |p| boxed(at_layer!(p, ScoreCam::new().max_batch(cam_batch(p)?))),
    },
    MethodInfo {
        name: "ablation-cam",
        groups: &["cams"],
        about: "Ablation-CAM (Desai and Ramaswamy): score drop per zeroed channel",
        reference: "Desai & Ramaswamy 2020, Ablation-CAM: Visual Explanations via Gradient-free Localization",
        output: Output::Layer,
        at_layer: true,
        needs_linear_head: false,
        peaky: false,
        params: &[CAM_BATCH],
        build: |p| boxed(at_layer!(p, AblationCam::new().max_batch(cam_batch(p)?))),
    },
    MethodInfo {
        name: "eigen-cam",
        groups: &["cams"],
        about: "Eigen-CAM (Muhammad and Yeasin): first principal component",
        reference: "Muhammad & Yeasin 2020, Eigen-CAM: Class Activation Map using Principal Components",
        output: Output::Layer,
        at_layer: true,
        needs_linear_head: false,
        peaky: false,
        params: &[],
        build: |p| boxed(at_layer!(p, EigenCam::new())),
    },
    MethodInfo {
        name: "integrated-gradients",
        groups: &["gradients"],
        about: "Integrated Gradients (Sundararajan et al.)",
        reference: "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks",
        output: Output::Input,
        at_layer: false,
        needs_linear_head: false,
        peaky: false,
        params: &[IG_STEPS, IG_METHOD, BASELINE, IG_BATCH],
        build: |p| {
            let batch: usize = p.get(&IG_BATCH)?;
            if batch == 0 {
                return Err(Error::param("--ig-batch", "must be positive"));
            }
            boxed(
                IntegratedGradients::new()
                    .steps(p.get(&IG_STEPS)?)
                    .method(p.get(&IG_METHOD)?)
                    .baseline(p.get(&BASELINE)?)
                    .max_batch(batch),
            )
        },
    },
    MethodInfo {
        name: "input-x-gradient",
        groups: &["gradients"],
        about: "input times dS/dI (Shrikumar et al.)",
        reference: "Shrikumar et al. 2016, Not Just a Black Box: Learning Important Features Through Propagating Activation Differences",
        output: Output::Input,
        at_layer: false,
        needs_linear_head: false,
        peaky: false,
        params: &[],
        build: |_| boxed(InputXGradient),
    },
];

/// A built-in method by name.
pub fn built_in(name: &str) -> Option<&'static MethodInfo> {
    BUILT_IN.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_params_agree() {
        let mut names: Vec<&str> = BUILT_IN.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BUILT_IN.len());
        // A parameter shared by several methods is the same parameter.
        let all: Vec<&Param> = BUILT_IN.iter().flat_map(|m| m.params).collect();
        for a in &all {
            for b in &all {
                if a.name == b.name {
                    assert_eq!(a, b);
                }
            }
        }
        // Every method builds with its defaults.
        for m in &BUILT_IN {
            let b = m.build(&Params::new()).unwrap();
            assert_eq!(DynAttribution::<f32>::dyn_name(&*b), m.name);
        }
    }

    #[test]
    fn parameters_are_parsed_and_named_in_errors() {
        let ig = built_in("integrated-gradients").unwrap();
        let e = ig
            .build(&Params::new().set("ig-steps", "many"))
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "invalid --ig-steps: cannot read `many`: invalid digit found in string"
        );
        let e = ig
            .build(&Params::new().set("ig-method", "simpson"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown `simpson`"), "{e}");
    }
}
