//! `attrib bench`: one method on a random-weight network, timed in-process after
//! warm-up; one JSON line, so runs can be collected and compared.

use std::time::Instant;

use attrib_core::{Error, Result, Target};
use attrib_dfdx::Arch;
use clap::Args;
use ndarray::Array4;
use serde_json::json;

use crate::inputs::Device;
use crate::methods::{attribute, parse_methods, MethodArgs, Settings};

/// Arguments of `attrib bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Architecture.
    #[arg(long)]
    pub arch: String,
    /// Method (as for explain).
    #[arg(long)]
    pub method: String,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Image side.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Timed iterations.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the network runs: cpu or cuda.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Also run the method once on the CPU and report the largest difference from
    /// it, relative to the CPU map's largest magnitude (`rel_diff`).
    #[arg(long)]
    pub check_cpu: bool,
    #[command(flatten)]
    pub options: MethodArgs,
}

/// Peak resident memory of this process in MiB (Linux), if known.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build_global()
            .map_err(|e| Error::param("--threads", e.to_string()))?;
    }
    let methods = parse_methods(std::slice::from_ref(&args.method), true)?;
    let [method] = methods.as_slice() else {
        return Err(Error::param("--method", "bench times exactly one method"));
    };
    if args.batch == 0 || args.size == 0 || args.iters == 0 {
        return Err(Error::param(
            "bench",
            "--batch, --size and --iters must be positive",
        ));
    }
    if args.size > crate::inputs::MAX_SIZE {
        return Err(Error::param(
            "--size",
            format!("{} is outside 1..={}", args.size, crate::inputs::MAX_SIZE),
        ));
    }
    // The input alone: more than 1 GiB of f32 is a typo, not a benchmark.
    const MAX_INPUT: usize = 1 << 28;
    if args.batch.saturating_mul(3 * args.size * args.size) > MAX_INPUT {
        return Err(Error::param(
            "--batch",
            format!(
                "{} images of {}x{} exceed the {MAX_INPUT} input values a bench may take",
                args.batch, args.size, args.size
            ),
        ));
    }
    let arch: Arch = args.arch.parse()?;
    let device = args.device.open()?;
    // Weights are shared (`Arc`), so the CPU copy for --check-cpu costs nothing.
    let cpu = arch.synthetic::<f32>(0, 1000)?;
    let net = &device.place(cpu.clone())?;
    let x = Array4::from_shape_fn((args.batch, 3, args.size, args.size), |(n, c, i, j)| {
        (((n * 7 + c * 13 + i * 3 + j * 5) % 29) as f32 / 29.0 - 0.5) * 2.0
    });
    let settings = Settings::from_args(&args.options, 16, 8)?;
    settings.check(&methods)?;
    let target = Target::TopPredicted;
    for _ in 0..args.warmup {
        attribute(net, *method, &x, &target, &settings, true)?;
    }
    let mut times = Vec::with_capacity(args.iters);
    let mut last = None;
    for _ in 0..args.iters {
        let t = Instant::now();
        last = Some(attribute(net, *method, &x, &target, &settings, true)?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0
    };
    // The same weights on the CPU, the same input: the GPU must give the CPU's map.
    let rel_diff = match (args.check_cpu, last) {
        (true, Some(map)) => {
            let want = attribute(&cpu, *method, &x, &target, &settings, true)?;
            if want.values.shape() != map.values.shape() {
                return Err(Error::shape(
                    "the map on the CPU",
                    format!("{:?}", want.values.shape()),
                    format!("{:?}", map.values.shape()),
                ));
            }
            let scale = want.values.iter().fold(0f32, |m, v| m.max(v.abs()));
            // A value that is not finite is as far off as can be (max() would drop NaN).
            let diff = if map.values.iter().any(|v| !v.is_finite()) {
                f32::INFINITY
            } else {
                (&map.values - &want.values)
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()))
            };
            Some(diff / scale.max(f32::MIN_POSITIVE))
        }
        _ => None,
    };
    let gpu_peak_mb = device
        .peak_bytes()
        .map(|b| (b as f64 / 1048576.0 * 10.0).round() / 10.0);
    println!(
        "{}",
        json!({
            "arch": arch.name(),
            "device": device.describe(),
            "method": method.name(),
            "batch": args.batch,
            "size": args.size,
            "threads": rayon::current_num_threads(),
            "median_ms": (median * 100.0).round() / 100.0,
            "min_ms": (times[0] * 100.0).round() / 100.0,
            "peak_rss_mb": peak_rss_mb().map(|m| (m * 10.0).round() / 10.0),
            "gpu_peak_mb": gpu_peak_mb,
            "rel_diff": rel_diff,
        })
    );
    Ok(())
}
