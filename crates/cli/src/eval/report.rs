//! The table and the plots of an evaluation, computed from its folder alone
//! (`config.json` and `records.jsonl`, records sorted by image and method), and the
//! merge of shards' folders. Because nothing else goes in, one run over all images
//! and the merge of its shards write the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use attrib_core::{Error, Result};
use attrib_eval::summary::{bootstrap, bootstrap_statistic, Interval};
use attrib_viz::plot::{svg, Chart, Series};
use serde_json::Value;

use crate::outputs::Outputs;

/// The error for a file of an evaluation folder.
pub(super) fn io(path: &Path, reason: impl ToString) -> Error {
    Error::Io {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The `(image, method)` of a record.
pub(super) fn key_of(v: &Value) -> std::result::Result<(String, String), String> {
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("a record without `{k}`"))
    };
    Ok((field("image")?, field("method")?))
}

/// Errors unless `existing` (the `config.json` at `path`) has the settings of
/// `cfg`, whatever its shard.
pub(super) fn check_same_config(cfg: &Value, existing: &Value, path: &Path) -> Result<()> {
    let mut old = existing.clone();
    let mut new = cfg.clone();
    for v in [&mut old, &mut new] {
        if let Some(o) = v.as_object_mut() {
            o.remove("shard");
        }
    }
    if old == new {
        return Ok(());
    }
    let (o, n) = (old.as_object(), new.as_object());
    let differs = match (o, n) {
        (Some(o), Some(n)) => n
            .iter()
            .find(|(k, v)| o.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "`{k}` is {} there, {v} here",
                    o.get(k).map_or("absent".into(), |x| x.to_string())
                )
            })
            .or_else(|| {
                o.keys()
                    .find(|k| !n.contains_key(*k))
                    .map(|k| format!("`{k}`"))
            }),
        _ => None,
    };
    Err(io(
        path,
        format!(
            "holds a run with other settings ({}); use another --out, or remove it to start over",
            differs.unwrap_or_else(|| "not an attrib eval config".into())
        ),
    ))
}

pub(super) fn read_config(dir: &Path) -> Result<Value> {
    let p = dir.join("config.json");
    let text = fs::read_to_string(&p).map_err(|e| io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| io(&p, format!("not JSON: {e}")))
}

/// The complete records of `dir`, parsed, in file order, with their line text.
pub(super) fn read_records(dir: &Path) -> Result<Vec<(String, Value)>> {
    let p = dir.join("records.jsonl");
    let text = fs::read_to_string(&p).map_err(|e| io(&p, e))?;
    parse_records(&text, &p)
}

/// The records of `text` (the file `path`). A last line without its newline (a run
/// killed while writing) is not a record.
pub(super) fn parse_records(text: &str, path: &Path) -> Result<Vec<(String, Value)>> {
    text[..complete_len(text)]
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| io(path, format!("line {}: not JSON: {e}", i + 1)))?;
            key_of(&v).map_err(|e| io(path, format!("line {}: {e}", i + 1)))?;
            Ok((line.to_string(), v))
        })
        .collect()
}

/// The bytes of `text` up to its last newline.
pub(super) fn complete_len(text: &str) -> usize {
    text.rfind('\n').map_or(0, |i| i + 1)
}

fn methods_of(cfg: &Value) -> Vec<String> {
    cfg["methods"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn has_metric(cfg: &Value, m: &str) -> bool {
    cfg["metrics"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == m))
}

/// Records sorted by image, then by the method's place in the config.
fn sorted(cfg: &Value, mut records: Vec<(String, Value)>) -> Vec<(String, Value)> {
    let methods = methods_of(cfg);
    let rank = |v: &Value| {
        let (image, method) = key_of(v).expect("checked on reading");
        let m = methods
            .iter()
            .position(|x| *x == method)
            .unwrap_or(usize::MAX);
        (image, m, method)
    };
    records.sort_by_key(|(_, v)| rank(v));
    records
}

/// A column of the table.
struct Column {
    key: &'static str,
    header: &'static str,
    metric: &'static str,
}

const COLUMNS: [Column; 9] = [
    Column {
        key: "loc_top1_error",
        header: "loc. error top-1 ↓",
        metric: "localisation",
    },
    Column {
        key: "loc_top5_error",
        header: "loc. error top-5 ↓",
        metric: "localisation",
    },
    Column {
        key: "pointing",
        header: "pointing ↑",
        metric: "pointing",
    },
    Column {
        key: "pointing_difficult",
        header: "pointing (difficult) ↑",
        metric: "pointing",
    },
    Column {
        key: "deletion_auc",
        header: "deletion AUC ↓",
        metric: "deletion",
    },
    Column {
        key: "insertion_auc",
        header: "insertion AUC ↑",
        metric: "insertion",
    },
    Column {
        key: "faithfulness",
        header: "faithfulness ρ ↑",
        metric: "faithfulness",
    },
    Column {
        key: "sanity_spearman",
        header: "sanity ρ ↓",
        metric: "sanity",
    },
    Column {
        key: "sanity_spearman_abs",
        header: "sanity \\|ρ\\| ↓",
        metric: "sanity",
    },
];

fn labels(v: &Value) -> impl Iterator<Item = &Value> {
    v["labels"].as_array().into_iter().flatten()
}

/// TorchRay's score over plays `(label, hit)`: the mean over labels of each
/// label's hit rate.
fn class_averaged(plays: &[&(String, bool)]) -> f64 {
    let mut per: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (l, hit) in plays {
        let e = per.entry(l.as_str()).or_default();
        e.0 += *hit as u64;
        e.1 += 1;
    }
    per.values().map(|&(h, n)| h as f64 / n as f64).sum::<f64>() / per.len() as f64
}

/// One column's interval over `records` (one method's), `None` where nothing was
/// measured.
fn column(key: &str, records: &[&Value], resamples: usize, seed: u64) -> Result<Option<Interval>> {
    let flag = |f: &str| -> Vec<f64> {
        records
            .iter()
            .flat_map(|r| labels(r))
            .filter_map(|l| l[f].as_bool().map(|b| b as u8 as f64))
            .collect()
    };
    let number = |f: &str, g: Option<&str>| -> Vec<f64> {
        records
            .iter()
            .flat_map(|r| labels(r))
            .filter_map(|l| match g {
                Some(g) => l[f][g].as_f64(),
                None => l[f].as_f64(),
            })
            .collect()
    };
    let last_step = |f: &str| -> Vec<f64> {
        records
            .iter()
            .filter_map(|r| r["sanity"]["cascading"].as_array()?.last()?[f].as_f64())
            .collect()
    };
    let values = match key {
        "loc_top1_error" => flag("top1_error"),
        "loc_top5_error" => flag("top5_error"),
        "pointing" | "pointing_difficult" => {
            let plays: Vec<(String, bool)> = records
                .iter()
                .flat_map(|r| labels(r))
                .filter(|l| key == "pointing" || l["difficult"].as_bool() == Some(true))
                .filter_map(|l| Some((l["label"].as_str()?.to_string(), l["hit"].as_bool()?)))
                .collect();
            if plays.is_empty() {
                return Ok(None);
            }
            return bootstrap_statistic(&plays, resamples, seed, class_averaged).map(Some);
        }
        "deletion_auc" => number("deletion", Some("auc")),
        "insertion_auc" => number("insertion", Some("auc")),
        "faithfulness" => number("faithfulness", None),
        "sanity_spearman" => last_step("spearman"),
        "sanity_spearman_abs" => last_step("spearman_abs"),
        _ => unreachable!("a column of COLUMNS"),
    };
    if values.is_empty() {
        return Ok(None);
    }
    bootstrap(&values, resamples, seed).map(Some)
}

/// Writes the summary, the plots (and, for a merge, nothing else) into `dir` from
/// its config and records; returns the markdown table.
pub(super) fn write(dir: &Path) -> Result<String> {
    let cfg = read_config(dir)?;
    let records = sorted(&cfg, read_records(dir)?);
    let methods = methods_of(&cfg);
    let resamples = cfg["resamples"].as_u64().unwrap_or(1000) as usize;
    let seed = cfg["seed"].as_u64().unwrap_or(0);
    let columns: Vec<&Column> = COLUMNS
        .iter()
        .filter(|c| has_metric(&cfg, c.metric))
        .collect();
    let by_method: Vec<Vec<&Value>> = methods
        .iter()
        .map(|m| {
            records
                .iter()
                .map(|(_, v)| v)
                .filter(|v| v["method"].as_str() == Some(m.as_str()))
                .collect()
        })
        .collect();
    let images: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|(_, v)| v["image"].as_str())
        .collect();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{} on {} of {} images; mean [95% bootstrap interval, {resamples} resamples]\n",
        cfg["arch"].as_str().unwrap_or("?"),
        images.len(),
        cfg["images"]
    );
    let _ = write!(md, "| method |");
    for c in &columns {
        let _ = write!(md, " {} |", c.header);
    }
    let _ = write!(md, "\n|---|");
    for _ in &columns {
        let _ = write!(md, "---|");
    }
    md.push('\n');
    let mut csv = String::from("method");
    for c in &columns {
        let _ = write!(csv, ",{0}_mean,{0}_low,{0}_high,{0}_n", c.key);
    }
    csv.push('\n');
    for (mi, (m, recs)) in methods.iter().zip(&by_method).enumerate() {
        let _ = write!(md, "| {m} |");
        csv.push_str(m);
        for (ci, c) in columns.iter().enumerate() {
            let s = seed.wrapping_add((mi * COLUMNS.len() + ci) as u64);
            match column(c.key, recs, resamples, s)? {
                Some(i) => {
                    let _ = write!(md, " {:.3} [{:.3}, {:.3}] |", i.mean, i.low, i.high);
                    let _ = write!(csv, ",{},{},{},{}", i.mean, i.low, i.high, i.n);
                }
                None => {
                    md.push_str(" — |");
                    csv.push_str(",,,,0");
                }
            }
        }
        md.push('\n');
        csv.push('\n');
    }
    let mut n_line = Vec::new();
    if let Some(first) = by_method.first() {
        let pairs: usize = first.iter().map(|r| labels(r).count()).sum();
        n_line.push(format!("{pairs} (image, label) pairs per method"));
        if has_metric(&cfg, "sanity") {
            n_line.push(format!(
                "sanity: Spearman's ρ of each map with the map after randomising every layer ({} layers, cascading), over {} images",
                cfg["sanity_layers"].as_array().map_or(0, Vec::len),
                first.len()
            ));
        }
    }
    let _ = writeln!(md, "\n{}.", n_line.join("; "));
    let mut out = Outputs::default();
    out.text("summary.md".into(), md.clone());
    out.text("summary.csv".into(), csv);
    if has_metric(&cfg, "deletion") || has_metric(&cfg, "insertion") {
        out.text("curves.svg".into(), curves_svg(&cfg, &methods, &by_method));
    }
    if has_metric(&cfg, "sanity") {
        out.text("sanity.svg".into(), sanity_svg(&methods, &by_method));
    }
    out.commit(dir)?;
    Ok(md)
}

/// The pointwise mean of equal-length curves.
fn mean_curve(curves: &[Vec<f64>]) -> Vec<f64> {
    let n = curves.iter().map(Vec::len).min().unwrap_or(0);
    (0..n)
        .map(|i| curves.iter().map(|c| c[i]).sum::<f64>() / curves.len() as f64)
        .collect()
}

fn curves_svg(cfg: &Value, methods: &[String], by_method: &[Vec<&Value>]) -> String {
    let size = cfg["size"].as_u64().unwrap_or(224) as f64;
    let steps = cfg["curve_steps"].as_u64().unwrap_or(28) as f64;
    let pixels = size * size;
    let step = (pixels / steps).ceil();
    let mut charts = Vec::new();
    for (game, substrate) in [
        ("deletion", "deletion_substrate"),
        ("insertion", "insertion_substrate"),
    ] {
        if !has_metric(cfg, game) {
            continue;
        }
        let series = methods
            .iter()
            .zip(by_method)
            .map(|(m, recs)| {
                let curves: Vec<Vec<f64>> = recs
                    .iter()
                    .flat_map(|r| labels(r))
                    .filter_map(|l| {
                        l[game]["curve"]
                            .as_array()
                            .map(|c| c.iter().filter_map(Value::as_f64).collect())
                    })
                    .collect();
                Series {
                    name: m.clone(),
                    points: mean_curve(&curves)
                        .into_iter()
                        .enumerate()
                        .map(|(i, p)| (((i as f64) * step).min(pixels) / pixels, p))
                        .collect(),
                    dashed: false,
                }
            })
            .collect();
        charts.push(Chart {
            title: format!(
                "{game} ({} substrate), mean over (image, label)",
                cfg[substrate].as_str().unwrap_or("?")
            ),
            x_label: format!(
                "fraction of pixels {}",
                if game == "deletion" {
                    "deleted"
                } else {
                    "inserted"
                }
            ),
            y_label: "class probability".into(),
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
            x_ticks: None,
            series,
        });
    }
    svg(&charts, 480, 360)
}

fn sanity_svg(methods: &[String], by_method: &[Vec<&Value>]) -> String {
    let mut charts = Vec::new();
    for how in ["cascading", "independent"] {
        for (measure, title) in [("spearman_abs", "Spearman |ρ|"), ("ssim", "SSIM")] {
            let mut ticks: Vec<String> = Vec::new();
            let series: Vec<Series> = methods
                .iter()
                .zip(by_method)
                .map(|(m, recs)| {
                    let runs: Vec<&Vec<Value>> = recs
                        .iter()
                        .filter_map(|r| r["sanity"][how].as_array())
                        .collect();
                    let n = runs.iter().map(|r| r.len()).min().unwrap_or(0);
                    if ticks.is_empty() {
                        if let Some(r) = runs.first() {
                            ticks.push("original".into());
                            ticks.extend(r.iter().take(n).map(|s| {
                                s["layers"]
                                    .as_array()
                                    .and_then(|l| l.last())
                                    .and_then(Value::as_str)
                                    .unwrap_or("?")
                                    .to_string()
                            }));
                        }
                    }
                    // Step 0 is the original model: similarity 1. A step whose
                    // measure is undefined on every image is a gap.
                    let mut points = vec![(0.0, 1.0)];
                    for k in 0..n {
                        let vals: Vec<f64> =
                            runs.iter().filter_map(|r| r[k][measure].as_f64()).collect();
                        let y = if vals.is_empty() {
                            f64::NAN
                        } else {
                            vals.iter().sum::<f64>() / vals.len() as f64
                        };
                        points.push(((k + 1) as f64, y));
                    }
                    Series {
                        name: m.clone(),
                        points,
                        dashed: false,
                    }
                })
                .collect();
            if ticks.is_empty() {
                continue;
            }
            charts.push(Chart {
                title: format!("{how} randomisation: {title}"),
                x_label: format!(
                    "randomised ({})",
                    if how == "cascading" {
                        "from the top, cumulatively"
                    } else {
                        "one layer at a time"
                    }
                ),
                y_label: title.into(),
                x_range: (0.0, (ticks.len() - 1).max(1) as f64),
                // Ticks at -0.25, 0, 0.25, ...; lower correlations are cut at the frame.
                y_range: (-0.25, 1.0),
                x_ticks: Some(ticks),
                series,
            });
        }
    }
    svg(&charts, 520, 400)
}

/// `attrib eval merge`: the records of `dirs` (shards of one evaluation) into `out`,
/// sorted, with the summary and plots, and the shards' example pictures.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<()> {
    let mut cfg: Option<Value> = None;
    let mut shards = Vec::new();
    let mut all: BTreeMap<(String, String), (String, Value)> = BTreeMap::new();
    for d in dirs {
        let c = read_config(d)?;
        shards.push(c["shard"].clone());
        match &cfg {
            None => cfg = Some(c),
            Some(first) => check_same_config(first, &c, &d.join("config.json"))?,
        }
        for (line, v) in read_records(d)? {
            let key = key_of(&v).expect("checked on reading");
            if let Some((old, _)) = all.get(&key) {
                if *old != line {
                    return Err(io(
                        &d.join("records.jsonl"),
                        format!("{} / {}: differs from another shard's record", key.0, key.1),
                    ));
                }
                continue;
            }
            all.insert(key, (line, v));
        }
    }
    let mut cfg = cfg.expect("at least one folder");
    cfg["shard"] = Value::Null;
    let expected = cfg["images"].as_u64().unwrap_or(0) as usize * methods_of(&cfg).len();
    let records = sorted(&cfg, all.into_values().collect());
    if records.len() < expected {
        eprintln!(
            "warning: {} of {expected} image-method results; the summary covers those (shards seen: {})",
            records.len(),
            shards.iter().map(Value::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    let mut files = Outputs::default();
    files.text(
        "config.json".into(),
        serde_json::to_string_pretty(&cfg).expect("JSON") + "\n",
    );
    let mut text = String::new();
    for (line, _) in &records {
        text.push_str(line);
        text.push('\n');
    }
    files.text("records.jsonl".into(), text);
    files.commit(out)?;
    let examples = out.join("examples");
    fs::create_dir_all(&examples).map_err(|e| io(&examples, e))?;
    for d in dirs {
        let Ok(list) = fs::read_dir(d.join("examples")) else {
            continue;
        };
        for e in list.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "png") {
                let to = examples.join(e.file_name());
                let bytes = fs::read(&p).map_err(|err| io(&p, err))?;
                attrib_io::fs::write_atomic(&to, |f| {
                    use std::io::Write;
                    f.write_all(&bytes)
                })?;
            }
        }
    }
    println!("{}", write(out)?);
    Ok(())
}
