//! Line charts as SVG text, for the curves people look at rather than read
//! (deletion and insertion, the sanity checks' similarity per randomised layer).
//! Plain SVG 1.1 with no script or external reference, deterministic to the byte
//! for the same input, so that two runs of an evaluation write identical files.

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// Its points `(x, y)`, drawn in order; non-finite points break the line.
    pub points: Vec<(f64, f64)>,
    /// Dashed instead of solid.
    pub dashed: bool,
}

/// A chart: a title, axis labels, the axes' ranges and its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Above the plot.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// `(min, max)` of the x axis.
    pub x_range: (f64, f64),
    /// `(min, max)` of the y axis.
    pub y_range: (f64, f64),
    /// Category names for the x ticks at `0, 1, 2, ...` instead of numbers (the
    /// randomised layers of a sanity check).
    pub x_ticks: Option<Vec<String>>,
    /// The lines.
    pub series: Vec<Series>,
}

/// Tableau's ten colours, the usual palette of matplotlib's line plots.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Charts side by side in one SVG, each `width x height` pixels.
pub fn svg(charts: &[Chart], width: u32, height: u32) -> String {
    let total = width * charts.len().max(1) as u32;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height}" viewBox="0 0 {total} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{total}" height="{height}" fill="white"/>"#
    );
    for (i, c) in charts.iter().enumerate() {
        chart(
            &mut s,
            c,
            i,
            i as f64 * width as f64,
            width as f64,
            height as f64,
        );
    }
    s.push_str("</svg>\n");
    s
}

fn chart(s: &mut String, c: &Chart, index: usize, left: f64, width: f64, height: f64) {
    let legend_h = 16.0 * c.series.len() as f64;
    let (x0, x1) = (left + 56.0, left + width - 16.0);
    let (y0, y1) = (34.0, height - 48.0 - legend_h);
    let span = |r: (f64, f64)| {
        if r.1 > r.0 {
            r
        } else {
            (r.0, r.0 + 1.0)
        }
    };
    let (xr, yr) = (span(c.x_range), span(c.y_range));
    let px = |x: f64| x0 + (x - xr.0) / (xr.1 - xr.0) * (x1 - x0);
    let py = |y: f64| y1 - (y - yr.0) / (yr.1 - yr.0) * (y1 - y0);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        (x0 + x1) / 2.0,
        escape(&c.title)
    );
    // Grid and ticks: five intervals on y; on x five, or one per category.
    for k in 0..=5 {
        let v = yr.0 + (yr.1 - yr.0) * k as f64 / 5.0;
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.2}</text>"##,
            x0 - 4.0,
            y + 4.0
        );
    }
    let xticks: Vec<(f64, String)> = match &c.x_ticks {
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(i, n)| (i as f64, n.clone()))
            .collect(),
        None => (0..=5)
            .map(|k| {
                let v = xr.0 + (xr.1 - xr.0) * k as f64 / 5.0;
                (v, format!("{v:.2}"))
            })
            .collect(),
    };
    let rotate = c.x_ticks.is_some();
    for (v, name) in &xticks {
        let x = px(*v);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{y1:.1}" x2="{x:.1}" y2="{:.1}" stroke="#000"/>"##,
            y1 + 4.0
        );
        if rotate {
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="end" font-size="9" transform="rotate(-40 {x:.1} {:.1})">{}</text>"#,
                y1 + 12.0,
                y1 + 12.0,
                escape(name)
            );
        } else {
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                y1 + 16.0,
                escape(name)
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#000"/>"##,
        x1 - x0,
        y1 - y0
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        y1 + if rotate { 40.0 } else { 32.0 },
        escape(&c.x_label)
    );
    let (lx, ly) = (left + 14.0, (y0 + y1) / 2.0);
    let _ = writeln!(
        s,
        r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"#,
        escape(&c.y_label)
    );
    // Lines stay inside the plot area: a value beyond the axis range is cut at the
    // frame, not drawn over the labels.
    let _ = writeln!(
        s,
        r#"<clipPath id="plot{index}"><rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}"/></clipPath>"#,
        x1 - x0,
        y1 - y0
    );
    for (i, series) in c.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let dash = if series.dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        // Split at non-finite points: a value that was not computed is not drawn.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(x, y) in &series.points {
            if x.is_finite() && y.is_finite() {
                runs.last_mut().expect("one run").push((px(x), py(y)));
            } else if !runs.last().expect("one run").is_empty() {
                runs.push(Vec::new());
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let pts: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.8"{dash} clip-path="url(#plot{index})"/>"#,
                pts.join(" ")
            );
            if run.len() == 1 {
                let (x, y) = run[0];
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"/>"#
                );
            }
        }
        let ly = height - 8.0 - 16.0 * (c.series.len() - 1 - i) as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{x0:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 4.0,
            x0 + 24.0,
            ly - 4.0,
            x0 + 30.0,
            escape(&series.name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_places_points_and_escapes_names() {
        let c = Chart {
            title: "deletion <zero>".into(),
            x_label: "fraction".into(),
            y_label: "p".into(),
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
            x_ticks: None,
            series: vec![Series {
                name: "a&b".into(),
                points: vec![(0.0, 1.0), (1.0, 0.0), (f64::NAN, 0.5)],
                dashed: false,
            }],
        };
        let s = svg(std::slice::from_ref(&c), 400, 300);
        assert!(s.contains("deletion &lt;zero&gt;") && s.contains("a&amp;b"));
        // (0, 1) at the top left corner of the plot area, (1, 0) at the bottom right.
        let legend = 16.0;
        let bottom = 300.0 - 48.0 - legend;
        assert!(
            s.contains(&format!("points=\"56.0,34.0 384.0,{bottom:.1}\"")),
            "{s}"
        );
        // Lines are clipped to the plot area.
        assert!(s.contains(r#"<clipPath id="plot0">"#) && s.contains(r#"clip-path="url(#plot0)""#));
        assert_eq!(s, svg(&[c], 400, 300));
    }
}
