//! Loading what a command explains: the model and the input batch.

use std::path::{Path, PathBuf};

use attrib_core::{BackwardOutput, BackwardRequest, Error, LayerTap, Model, Result};
use attrib_dfdx::{imagenet, Arch, Cpu, Executor, Head, Network};
use clap::Args;
use ndarray::{Array2, Array3, Array4, ArrayView4, Axis, Ix4};
use serde_json::{json, Value};

/// Where the model and the inputs come from.
#[derive(Debug, Args, Clone)]
pub struct Source {
    /// Architecture (resnet18, resnet34, resnet50, vgg16, vgg16_bn, alexnet, efficientnet-lite0, mobilenet_v2).
    #[arg(long)]
    pub arch: String,
    /// Weights: safetensors, or a PyTorch .pth (zip or legacy format).
    #[arg(long)]
    pub weights: PathBuf,
    /// Images (PNG or JPEG), resized to --size and normalised with ImageNet mean/std.
    #[arg(long, num_args = 1.., conflicts_with = "input", required_unless_present = "input")]
    pub image: Vec<PathBuf>,
    /// A float32 NCHW .npy tensor, used as is.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Image side after resizing (1 to 4096).
    #[arg(long, default_value_t = 224)]
    pub size: usize,
}

/// Where a classifier runs (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Device {
    /// The CPU backend (all cores).
    #[default]
    Cpu,
    /// GPU 0, through CUDA (needs a build with `--features cuda` and the NVIDIA
    /// driver; cuBLAS and NVRTC are loaded at run time).
    Cuda,
}

impl Device {
    /// Opens the device once (on CUDA: the GPU, cuBLAS and the compiled kernels), for
    /// every network a command places on it.
    pub fn open(self) -> Result<Opened> {
        match self {
            Device::Cpu => Ok(Opened::Cpu),
            Device::Cuda => open_cuda(),
        }
    }
}

/// An opened [`Device`].
pub enum Opened {
    /// The CPU backend.
    Cpu,
    /// A GPU.
    #[cfg(feature = "cuda")]
    Cuda(std::sync::Arc<attrib_dfdx::gpu::CudaApi>),
}

impl Opened {
    /// `net` on this device: as it is on the CPU; on a GPU, the same network run by
    /// the GPU executor (`attrib_dfdx::gpu`).
    pub fn place(&self, net: Network<f32>) -> Result<Box<dyn LayerTap<f32>>> {
        match self {
            Opened::Cpu => Ok(Box::new(net)),
            #[cfg(feature = "cuda")]
            Opened::Cuda(api) => Ok(Box::new(attrib_dfdx::gpu::GpuNetwork::new(
                net,
                api.clone(),
            )?)),
        }
    }

    /// The device, in words.
    pub fn describe(&self) -> String {
        match self {
            Opened::Cpu => "cpu".into(),
            #[cfg(feature = "cuda")]
            Opened::Cuda(api) => attrib_dfdx::gpu::GpuApi::describe(&**api),
        }
    }

    /// Peak device memory in bytes so far, on a GPU.
    pub fn peak_bytes(&self) -> Option<usize> {
        match self {
            Opened::Cpu => None,
            #[cfg(feature = "cuda")]
            Opened::Cuda(api) => attrib_dfdx::gpu::GpuApi::peak_bytes(&**api),
        }
    }
}

impl Opened {
    /// `net` on this device as the executor a model's head sits on: the network
    /// itself on the CPU, the GPU executor's copy of it on a GPU (the head stays on
    /// the CPU).
    pub fn trunk<'a>(&self, net: &'a Network<f32>) -> Result<Trunk<'a>> {
        match self {
            Opened::Cpu => Ok(Trunk::Cpu(net)),
            #[cfg(feature = "cuda")]
            Opened::Cuda(api) => Ok(Trunk::Gpu(Box::new(attrib_dfdx::gpu::GpuNetwork::new(
                net.clone(),
                api.clone(),
            )?))),
        }
    }
}

/// A network placed by [`Opened::trunk`]: an [`Executor`] whichever device it is on,
/// so the commands' code is written once.
pub enum Trunk<'a> {
    /// The network itself.
    Cpu(&'a Network<f32>),
    /// Its copy on a GPU.
    #[cfg(feature = "cuda")]
    Gpu(Box<attrib_dfdx::gpu::GpuNetwork<attrib_dfdx::gpu::CudaApi>>),
}

/// `$body` with `$n` bound to the trunk's executor, whichever variant it is.
macro_rules! on_trunk {
    ($t:expr, $n:ident => $body:expr) => {
        match $t {
            Trunk::Cpu($n) => $body,
            #[cfg(feature = "cuda")]
            Trunk::Gpu($n) => $body,
        }
    };
}

impl Executor<f32, Cpu> for Trunk<'_> {
    fn network(&self) -> &Network<f32> {
        on_trunk!(self, n => n.network())
    }

    fn forward_with<H: Head<f32, Cpu>>(
        &self,
        input: ArrayView4<f32>,
        head: &H,
    ) -> Result<Array2<f32>> {
        on_trunk!(self, n => n.forward_with(input, head))
    }

    fn backward_with<H: Head<f32, Cpu>>(
        &self,
        req: &BackwardRequest<'_, f32>,
        head: &H,
    ) -> Result<BackwardOutput<f32>> {
        on_trunk!(self, n => n.backward_with(req, head))
    }

    fn activations_with<H: Head<f32, Cpu>>(
        &self,
        input: ArrayView4<f32>,
        layers: &[String],
        head: &H,
    ) -> Result<(Array2<f32>, Vec<Array4<f32>>)> {
        on_trunk!(self, n => n.activations_with(input, layers, head))
    }

    fn forward_from_with<H: Head<f32, Cpu>>(
        &self,
        input: ArrayView4<f32>,
        layer: &str,
        activations: ArrayView4<f32>,
        items: &[usize],
        head: &H,
    ) -> Result<Array2<f32>> {
        on_trunk!(self, n => n.forward_from_with(input, layer, activations, items, head))
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Opened> {
    Ok(Opened::Cuda(std::sync::Arc::new(
        attrib_dfdx::gpu::CudaApi::new(0)?,
    )))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Opened> {
    Err(Error::unsupported(
        "--device cuda",
        "this attrib was built without the GPU path; build it with `cargo build --release --features cuda` (no CUDA toolkit needed)",
    ))
}

/// The batch to explain.
pub struct Batch {
    /// NCHW, preprocessed.
    pub x: Array4<f32>,
    /// One stem per item (image file stems; `stem.0`, `stem.1`, ... for a tensor batch).
    pub stems: Vec<String>,
    /// The files' stem for per-batch outputs.
    pub file_stems: Vec<String>,
    /// The photos `(3, H, W)` in `[0, 1]` for overlays.
    pub photos: Vec<Array3<f32>>,
    /// Each item's `(width, height)` as read, before resizing.
    pub original: Vec<(usize, usize)>,
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map_or_else(|| "input".to_string(), |s| s.to_string_lossy().into_owned())
}

/// The `--arch` of a command that takes one architecture.
pub fn check_arch(arch: &str, expected: &str) -> Result<()> {
    if arch != expected {
        return Err(Error::param(
            "--arch",
            format!("unknown `{arch}`; this command takes {expected}"),
        ));
    }
    Ok(())
}

pub fn load_model(arch: &str, weights: &Path) -> Result<(Arch, Network<f32>)> {
    let arch: Arch = arch.parse()?;
    Ok((arch, arch.load::<f32>(weights)?))
}

/// The largest `--size`: activations grow with its square (a ResNet-50 at 4096 needs
/// some 10 GB), and resizing to more than this is a typo, not a request.
pub const MAX_SIZE: usize = 4096;

/// Reads the batch for a model taking `channels` input channels. Errors name the file
/// and what is wrong; nothing here allocates on a file's say-so before checking it
/// (`attrib_io`'s limits).
pub fn load_batch(src: &Source, channels: usize) -> Result<Batch> {
    if src.size == 0 || src.size > MAX_SIZE {
        return Err(Error::param(
            "--size",
            format!("{} is outside 1..={MAX_SIZE}", src.size),
        ));
    }
    if let Some(path) = &src.input {
        let a = attrib_io::npy::read_f32(path)?;
        let shape = a.shape().to_vec();
        let x = a.into_dimensionality::<Ix4>().map_err(|_| {
            Error::shape(
                format!("{} (--input)", path.display()),
                "(N, C, H, W)",
                format!("{shape:?}"),
            )
        })?;
        attrib_core::check_input(&x.view(), channels).map_err(|e| match e {
            Error::ShapeMismatch {
                what,
                expected,
                got,
            } => Error::ShapeMismatch {
                what: format!("{} (--input): {what}", path.display()),
                expected,
                got,
            },
            other => other,
        })?;
        let s = stem(path);
        let n = x.dim().0;
        let photos = x
            .outer_iter()
            .map(|item| {
                if item.dim().0 == 3 {
                    imagenet::denormalize(item)
                } else {
                    let g = attrib_viz::normalize(
                        item.index_axis(Axis(0), 0),
                        attrib_viz::Normalization::MinMax,
                    );
                    ndarray::stack(Axis(0), &[g.view(), g.view(), g.view()]).expect("equal shapes")
                }
            })
            .collect();
        let stems = if n == 1 {
            vec![s.clone()]
        } else {
            (0..n).map(|i| format!("{s}.{i}")).collect()
        };
        let (_, _, h, w) = x.dim();
        return Ok(Batch {
            x,
            stems,
            file_stems: vec![s],
            photos,
            original: vec![(w, h); n],
        });
    }
    if channels != 3 {
        return Err(Error::shape(
            "--image",
            format!("a model taking RGB (3 channels); this one takes {channels}"),
            "an RGB image",
        ));
    }
    let mut items = Vec::new();
    let mut photos = Vec::new();
    let mut stems = Vec::new();
    let mut original = Vec::new();
    for p in &src.image {
        let img = attrib_io::image::read_rgb8(p)?;
        original.push((img.width() as usize, img.height() as usize));
        let photo = imagenet::resize_rgb(&img, src.size);
        drop(img);
        items.push(imagenet::normalize(&photo));
        photos.push(photo);
        stems.push(stem(p));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = stems.iter().find(|s| !seen.insert(*s)) {
        return Err(Error::param(
            "--image",
            format!("two images share the stem `{dup}`; their outputs would collide"),
        ));
    }
    let views: Vec<_> = items.iter().map(|a| a.view()).collect();
    let x = ndarray::concatenate(Axis(0), &views)
        .map_err(|e| Error::shape("images", "equal sizes", e))?;
    Ok(Batch {
        x,
        file_stems: stems.clone(),
        stems,
        photos,
        original,
    })
}

/// Softmax over each row.
pub fn softmax(scores: &Array2<f32>) -> Array2<f32> {
    let mut p = scores.clone();
    for mut row in p.rows_mut() {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    p
}

/// The top `k` classes of each row as JSON `[{class, name, probability}]`.
pub fn top_k(probs: &Array2<f32>, k: usize) -> Vec<Vec<(usize, f32)>> {
    probs
        .rows()
        .into_iter()
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            idx.into_iter().take(k).map(|i| (i, row[i])).collect()
        })
        .collect()
}

pub fn top_json(top: &[(usize, f32)]) -> Value {
    Value::Array(
        top.iter()
            .map(|&(c, p)| json!({"class": c, "name": imagenet::class_name(c), "probability": p}))
            .collect(),
    )
}

/// Arguments of `attrib predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub source: Source,
    /// How many classes to list.
    #[arg(long, default_value_t = 5)]
    pub topk: usize,
    /// Where the network runs: cpu, or cuda (GPU 0; needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
}

pub fn predict(args: PredictArgs) -> Result<()> {
    let (arch, net) = load_model(&args.source.arch, &args.source.weights)?;
    let net = args.device.open()?.place(net)?;
    let batch = load_batch(&args.source, net.input_shape()[0])?;
    let probs = softmax(&net.forward(batch.x.view())?);
    let items: Vec<Value> = top_k(&probs, args.topk.max(1))
        .iter()
        .zip(&batch.stems)
        .map(|(t, s)| json!({"input": s, "top": top_json(t)}))
        .collect();
    println!("{}", json!({"arch": arch.name(), "items": items}));
    Ok(())
}
