//! `attrib eval`: the evaluation metrics of `attrib_eval` over an annotated image
//! set, one JSON line per image and method, then the paper's table.
//!
//! A run's folder holds `config.json` (everything that decides the numbers),
//! `records.jsonl` (appended image by image, so that a killed run resumes where it
//! stopped: a torn last line is dropped and redone), and, once every image of its
//! shard is done, the summary (`summary.md`, `summary.csv`), the plots
//! (`curves.svg`, `sanity.svg`) and example pictures (`examples/`). The summary is
//! a function of the sorted records alone, so the merge of shards gives the same
//! bytes as one run over all images.

mod report;
mod run;

use std::path::PathBuf;

use attrib_core::{Error, Result};
use clap::{Args, Subcommand};

use crate::methods::MethodArgs;

pub use report::merge;
pub use run::run;

/// `attrib eval`: a run, or `attrib eval merge`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalCommand {
    #[command(subcommand)]
    pub merge: Option<EvalSub>,
    #[command(flatten)]
    pub args: EvalArgs,
}

/// The subcommands of `attrib eval`.
#[derive(Debug, Subcommand)]
pub enum EvalSub {
    /// Combines the output folders of shards (`--shard K/N`) into one: their records,
    /// sorted, and the summary and plots one run over all images would give.
    Merge {
        /// The shards' output folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The merged output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The metrics `attrib eval` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// The Grad-CAM paper's weakly-supervised localisation (top-1 and top-5 error).
    Localisation,
    /// The pointing game, all plays and the difficult subset.
    Pointing,
    /// RISE's deletion AUC.
    Deletion,
    /// RISE's insertion AUC.
    Insertion,
    /// Spearman's correlation with occlusion's map (the Grad-CAM paper's faithfulness).
    Faithfulness,
    /// Adebayo et al.'s model-randomisation checks.
    Sanity,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Localisation,
        Metric::Pointing,
        Metric::Deletion,
        Metric::Insertion,
        Metric::Faithfulness,
        Metric::Sanity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Localisation => "localisation",
            Metric::Pointing => "pointing",
            Metric::Deletion => "deletion",
            Metric::Insertion => "insertion",
            Metric::Faithfulness => "faithfulness",
            Metric::Sanity => "sanity",
        }
    }

    fn parse(s: &str) -> Result<Metric> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s || (s == "localization" && *m == Metric::Localisation))
            .ok_or_else(|| {
                Error::param(
                    "--metric",
                    format!(
                        "unknown `{s}`; valid: {}",
                        Metric::ALL.map(|m| m.name()).join(", ")
                    ),
                )
            })
    }

    /// `--metric` values, repeatable or comma-separated, in canonical order.
    pub fn parse_list(list: &[String]) -> Result<Vec<Metric>> {
        let mut out = Vec::new();
        for s in list.iter().flat_map(|s| s.split(',')) {
            let s = s.trim();
            if s == "all" {
                out.extend(Metric::ALL);
            } else {
                out.push(Metric::parse(s)?);
            }
        }
        out.sort_unstable();
        out.dedup();
        if out.is_empty() {
            return Err(Error::param("--metric", "no metric given"));
        }
        Ok(out)
    }
}

/// `--shard K/N`: the images whose index (in file-name order) is `K` modulo `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || {
            Error::param(
                "--shard",
                format!("`{s}` is not K/N with 0 <= K < N (K counts from 0, as Slurm's SLURM_ARRAY_TASK_ID and Kubernetes' JOB_COMPLETION_INDEX do)"),
            )
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    pub fn takes(&self, i: usize) -> bool {
        i % self.count == self.index
    }
}

/// Arguments of `attrib eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Architecture (resnet18, resnet34, resnet50, vgg16, vgg16_bn, alexnet, efficientnet-lite0, mobilenet_v2).
    #[arg(long, required = true)]
    pub arch: Option<String>,
    /// Weights: safetensors, or a PyTorch .pth.
    #[arg(long, required = true)]
    pub weights: Option<PathBuf>,
    /// The images' folder; annotations name files relative to it.
    #[arg(long, required = true)]
    pub data: Option<PathBuf>,
    /// Pascal VOC or ILSVRC XML (a file or a folder of them), or a COCO JSON file.
    #[arg(long, required = true)]
    pub annotations: Option<PathBuf>,
    /// voc, ilsvrc or coco (default: detected; XML whose names are all synset ids is
    /// ILSVRC).
    #[arg(long)]
    pub format: Option<String>,
    /// A JSON object from each label to its class indices (`{"cat": [281, 285]}`).
    /// Default: the ILSVRC synsets in torchvision's order.
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Methods (`attrib methods`), or a group; repeatable or comma-separated.
    #[arg(long = "method", default_value = "grad-cam")]
    pub methods: Vec<String>,
    /// localisation, pointing, deletion, insertion, faithfulness, sanity, or all;
    /// repeatable or comma-separated.
    #[arg(
        long = "metric",
        default_value = "localisation,pointing,deletion,insertion"
    )]
    pub metrics: Vec<String>,
    /// The output folder.
    #[arg(long, default_value = "eval-out")]
    pub out: PathBuf,
    /// Image side after resizing (as `explain --size`).
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Localisation: the threshold, as a fraction of the map's maximum (the Grad-CAM
    /// paper's 15%).
    #[arg(long, default_value_t = 0.15)]
    pub threshold: f64,
    /// Pointing game: the tolerance in image pixels (TorchRay's 15).
    #[arg(long, default_value_t = 15.0)]
    pub tolerance: f64,
    /// Deletion and insertion: points on each curve after the first (RISE uses
    /// 224 at 224 x 224, one row of pixels a step; fewer is faster and coarser).
    #[arg(long, default_value_t = 28)]
    pub curve_steps: usize,
    /// What deleted pixels become: zero (RISE), blur or mean.
    #[arg(long, default_value = "zero")]
    pub deletion_substrate: String,
    /// What insertion starts from: blur (RISE), zero or mean.
    #[arg(long, default_value = "blur")]
    pub insertion_substrate: String,
    /// Sanity checks: cascading, independent, or both.
    #[arg(long, default_value = "cascading")]
    pub randomisation: String,
    /// Sanity checks: the modules to randomise, top down, comma-separated (default:
    /// every conv and linear layer, from the classifier down).
    #[arg(long)]
    pub sanity_layers: Option<String>,
    /// Only the first N images of the shard (after resuming).
    #[arg(long)]
    pub limit: Option<usize>,
    /// K/N: this copy's slice of the images (for job arrays); K counts from 0.
    #[arg(long)]
    pub shard: Option<String>,
    /// Example pictures (map, found box, ground truth, point) for the first N images.
    #[arg(long, default_value_t = 4)]
    pub examples: usize,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Where the networks run (the evaluated one and the sanity checks' randomised
    /// copies): cpu, or cuda (GPU 0; needs a build with `--features cuda`). Not part
    /// of the run's settings: a run may be resumed or merged across devices, whose
    /// maps agree to 1e-4.
    #[arg(long, value_enum, default_value_t = crate::inputs::Device::Cpu)]
    pub device: crate::inputs::Device,
    #[command(flatten)]
    pub options: MethodArgs,
}

/// Runs `attrib eval` or `attrib eval merge`.
pub fn eval(cmd: EvalCommand) -> Result<()> {
    match cmd.merge {
        Some(EvalSub::Merge { dirs, out }) => merge(&dirs, &out),
        None => run(cmd.args),
    }
}
