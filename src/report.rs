//! The training log as CSV and the perplexity curve as a self-contained SVG chart.
//!
//! Both are plain string building with no dependencies; the `write_*` functions save through
//! [`write_atomic`], so an interrupted write never leaves a half-written file.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::Result;
use crate::outputs::write_atomic;

/// One evaluation point of a training run: where training was and the perplexities measured.
///
/// ```
/// use rnnlm::report::{csv, EvalPoint};
/// // A validation point: no training perplexity, so its CSV cell is empty.
/// let p = EvalPoint { epoch: 2, iter: 49, step: 98, tokens: 1960, elapsed_s: 0.25, lr: 1.25,
///                     train_ppl: None, valid_ppl: Some(3.5) };
/// assert_eq!(csv(&[p]).lines().nth(1), Some("2,49,98,1960,0.25,1.25,,3.5"));
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalPoint {
    /// Epoch, as the training loop counts it (the book's start at 1).
    pub epoch: usize,
    /// Iteration within the epoch.
    pub iter: usize,
    /// Global optimizer steps so far: the x axis of the plot.
    pub step: usize,
    /// Tokens trained on so far.
    pub tokens: u64,
    /// Wall-clock seconds since training started.
    pub elapsed_s: f64,
    /// Learning rate in use at this point.
    pub lr: f32,
    /// Training perplexity (e.g. over the iterations since the last point), if measured.
    pub train_ppl: Option<f64>,
    /// Validation perplexity, if measured at this point.
    pub valid_ppl: Option<f64>,
}

/// The CSV header line written by [`csv`], without the newline.
///
/// ```
/// use rnnlm::report::{csv, CSV_HEADER};
/// assert_eq!(csv(&[]), format!("{CSV_HEADER}\n")); // no points: the header alone
/// assert_eq!(CSV_HEADER.split(',').count(), 8); // one column per EvalPoint field
/// ```
pub const CSV_HEADER: &str = "epoch,iter,step,tokens,elapsed_s,lr,train_ppl,valid_ppl";

/// Formats `points` as CSV: the header [`CSV_HEADER`], then one line per point.
///
/// Every line ends with `\n`. A `None` perplexity is an empty cell. Floats are written in
/// Rust's shortest round-trip form (`0.1`, `5.0`, `1e-7`; non-finite values as `NaN`, `inf`,
/// `-inf`), so parsing a cell as `f64` (or `f32` for `lr`) gives back the exact value; pandas
/// and Python's `float` read them too.
///
/// ```
/// use rnnlm::report::{csv, svg, EvalPoint};
/// let p = EvalPoint { epoch: 1, iter: 20, step: 20, tokens: 14000, elapsed_s: 1.5, lr: 5.0,
///                     train_ppl: Some(812.5), valid_ppl: None };
/// let text = csv(&[p.clone()]);
/// assert_eq!(text.lines().nth(1), Some("1,20,20,14000,1.5,5.0,812.5,"));
/// assert!(svg(&[p], "run").starts_with("<svg"));
/// ```
pub fn csv(points: &[EvalPoint]) -> String {
    let mut out = String::with_capacity(64 * (points.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    let opt = |v: Option<f64>| v.map(|v| format!("{v:?}")).unwrap_or_default();
    for p in points {
        let _ = writeln!(
            out,
            "{},{},{},{},{:?},{:?},{},{}",
            p.epoch,
            p.iter,
            p.step,
            p.tokens,
            p.elapsed_s,
            p.lr,
            opt(p.train_ppl),
            opt(p.valid_ppl)
        );
    }
    out
}

/// Writes [`csv`]`(points)` to `path` atomically (temporary sibling file, fsync, rename).
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) naming `path` if it cannot be written (for example, its
/// directory does not exist); nothing is left behind and an existing file is kept intact.
///
/// ```
/// use rnnlm::report::{csv, write_csv, EvalPoint};
/// let p = EvalPoint { epoch: 1, iter: 1, step: 1, tokens: 700, elapsed_s: 0.1, lr: 5.0,
///                     train_ppl: Some(9.5), valid_ppl: None };
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-log-{}.csv", std::process::id()));
/// write_csv(&path, &[p.clone()]).unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), csv(&[p.clone()]));
/// let missing = std::env::temp_dir().join(format!("rnnlm-doc-no-dir-{}", std::process::id()));
/// assert!(write_csv(&missing.join("log.csv"), &[p]).is_err()); // the folder does not exist
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn write_csv(path: &Path, points: &[EvalPoint]) -> Result<()> {
    write_atomic(path, csv(points).as_bytes())
}

/// Writes [`svg`]`(points, title)` to `path` atomically (temporary sibling file, fsync, rename).
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) naming `path` if it cannot be written (for example, its
/// directory does not exist); nothing is left behind and an existing file is kept intact.
///
/// ```
/// use rnnlm::report::{svg, write_svg, EvalPoint};
/// let p = EvalPoint { epoch: 1, iter: 1, step: 1, tokens: 700, elapsed_s: 0.1, lr: 5.0,
///                     train_ppl: Some(9.5), valid_ppl: None };
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-curve-{}.svg", std::process::id()));
/// write_svg(&path, &[p.clone()], "ptb").unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), svg(&[p], "ptb"));
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn write_svg(path: &Path, points: &[EvalPoint], title: &str) -> Result<()> {
    write_atomic(path, svg(points, title).as_bytes())
}

// Geometry of the chart, in SVG user units (matplotlib's default 640x480 figure).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;
const TRAIN_COLOR: &str = "#1f77b4";
const VALID_COLOR: &str = "#ff7f0e";

/// Renders the perplexity curve of a training run as a self-contained SVG line chart.
///
/// Like the book's matplotlib plot: x is the global step (label "iterations"), y the
/// perplexity (label "perplexity"), on a log scale when the largest plotted value is more than
/// 20 times the smallest, else linear. The training perplexities are one polyline, the
/// validation perplexities a second one with a marker on each point; a legend names the series
/// present, the axes carry ticks with readable numbers, and `title` (XML-escaped) sits on top.
///
/// Points whose perplexity is `None`, NaN or infinite (or not positive, on a log scale) are
/// left out of that series. With no plottable point the chart shows empty axes and "no data";
/// a single point, or equal values, get a padded axis range.
///
/// ```
/// use rnnlm::report::{svg, EvalPoint};
/// let point = |step, train_ppl, valid_ppl| EvalPoint { epoch: 1, iter: step, step, tokens: 0,
///     elapsed_s: 0.0, lr: 5.0, train_ppl, valid_ppl };
/// let chart = svg(&[point(1, Some(900.0), None), point(50, Some(300.0), Some(250.0))], "a<b");
/// assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
/// assert!(chart.contains(r#"class="train""#) && chart.contains(r#"class="valid""#));
/// assert!(chart.contains("a&lt;b")); // the title is escaped
/// assert!(svg(&[], "empty").contains("no data"));
/// ```
pub fn svg(points: &[EvalPoint], title: &str) -> String {
    let series = |get: fn(&EvalPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter_map(|p| get(p).filter(|v| v.is_finite()).map(|v| (p.step as f64, v)))
            .collect()
    };
    let mut train = series(|p| p.train_ppl);
    let mut valid = series(|p| p.valid_ppl);

    let ys = || train.iter().chain(&valid).map(|&(_, y)| y);
    let (ymin, ymax) = min_max(ys());
    let log = ymin > 0.0 && ymax / ymin > 20.0;
    if log {
        // min > 0 already, but keep the invariant local to the filter.
        train.retain(|&(_, y)| y > 0.0);
        valid.retain(|&(_, y)| y > 0.0);
    }
    let xs = train.iter().chain(&valid).map(|&(x, _)| x);
    let (xmin, xmax) = min_max(xs);
    let empty = train.is_empty() && valid.is_empty();

    let xaxis = if empty {
        Axis::linear(0.0, 1.0, true)
    } else {
        Axis::linear(xmin, xmax, true)
    };
    let yaxis = if empty {
        Axis::linear(0.0, 1.0, false)
    } else if log {
        Axis::log(ymin, ymax)
    } else {
        Axis::linear(ymin, ymax, false)
    };

    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |x: f64| LEFT + xaxis.frac(x) * pw;
    let py = |y: f64| TOP + (1.0 - yaxis.frac(y)) * ph;

    let mut s = String::with_capacity(4096 + 40 * (train.len() + valid.len()));
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Arial, Helvetica, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + pw / 2.0,
        TOP - 16.0,
        xml_escape(title)
    );

    // Grid and ticks.
    let _ = writeln!(s, r##"<g stroke="#dddddd" stroke-width="1">"##);
    for t in &xaxis.ticks {
        let x = px(t.value);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.2}" y1="{TOP:.2}" x2="{x:.2}" y2="{:.2}"/>"#,
            TOP + ph
        );
    }
    for t in yaxis.ticks.iter().filter(|t| t.label.is_some()) {
        let y = py(t.value);
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}"/>"#,
            LEFT + pw
        );
    }
    s.push_str("</g>\n");
    let _ = writeln!(s, r#"<g stroke="black" stroke-width="1">"#);
    for t in &xaxis.ticks {
        let x = px(t.value);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.2}" y1="{:.2}" x2="{x:.2}" y2="{:.2}"/>"#,
            TOP + ph,
            TOP + ph + 5.0
        );
    }
    for t in &yaxis.ticks {
        let y = py(t.value);
        let len = if t.label.is_some() { 5.0 } else { 3.0 };
        let _ = writeln!(
            s,
            r#"<line x1="{:.2}" y1="{y:.2}" x2="{LEFT:.2}" y2="{y:.2}"/>"#,
            LEFT - len
        );
    }
    s.push_str("</g>\n");
    for t in &xaxis.ticks {
        if let Some(label) = &t.label {
            let _ = writeln!(
                s,
                r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">{label}</text>"#,
                px(t.value),
                TOP + ph + 19.0
            );
        }
    }
    for t in &yaxis.ticks {
        if let Some(label) = &t.label {
            let _ = writeln!(
                s,
                r#"<text x="{:.2}" y="{:.2}" text-anchor="end">{label}</text>"#,
                LEFT - 8.0,
                py(t.value) + 4.0
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT:.2}" y="{TOP:.2}" width="{pw:.2}" height="{ph:.2}" fill="none" stroke="black" stroke-width="1"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">iterations</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 14.0
    );
    let (lx, ly) = (20.0, TOP + ph / 2.0);
    let _ = writeln!(
        s,
        r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle" font-size="13" transform="rotate(-90 {lx:.1} {ly:.1})">perplexity{}</text>"#,
        if log { " (log scale)" } else { "" }
    );

    if empty {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888888">no data</text>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }

    // The data.
    let polyline = |s: &mut String, pts: &[(f64, f64)], color: &str, class: &str| {
        let _ = write!(
            s,
            r#"<polyline class="{class}" fill="none" stroke="{color}" stroke-width="1.8" stroke-linejoin="round" points=""#
        );
        for (i, &(x, y)) in pts.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(s, "{sep}{:.2},{:.2}", px(x), py(y));
        }
        s.push_str("\"/>\n");
    };
    if !train.is_empty() {
        polyline(&mut s, &train, TRAIN_COLOR, "train");
        if train.len() == 1 {
            let (x, y) = train[0];
            let _ = writeln!(
                s,
                r#"<circle cx="{:.2}" cy="{:.2}" r="2.5" fill="{TRAIN_COLOR}"/>"#,
                px(x),
                py(y)
            );
        }
    }
    if !valid.is_empty() {
        polyline(&mut s, &valid, VALID_COLOR, "valid");
        let _ = writeln!(s, r#"<g fill="{VALID_COLOR}">"#);
        for &(x, y) in &valid {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.2}" cy="{:.2}" r="3.5"/>"#,
                px(x),
                py(y)
            );
        }
        s.push_str("</g>\n");
    }

    // Legend, top right inside the plot.
    let entries: Vec<(&str, &str, bool)> = [
        ("train", TRAIN_COLOR, false, !train.is_empty()),
        ("valid", VALID_COLOR, true, !valid.is_empty()),
    ]
    .into_iter()
    .filter(|e| e.3)
    .map(|(name, color, marker, _)| (name, color, marker))
    .collect();
    if !entries.is_empty() {
        let (bw, bh) = (92.0, 8.0 + 20.0 * entries.len() as f64);
        let (bx, by) = (LEFT + pw - bw - 10.0, TOP + 10.0);
        let _ = writeln!(
            s,
            r##"<rect x="{bx:.2}" y="{by:.2}" width="{bw:.2}" height="{bh:.2}" fill="white" fill-opacity="0.85" stroke="#cccccc" rx="3"/>"##
        );
        for (i, (name, color, marker)) in entries.into_iter().enumerate() {
            let y = by + 14.0 + 20.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="{color}" stroke-width="1.8"/>"#,
                bx + 8.0,
                bx + 36.0
            );
            if marker {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.2}" cy="{y:.2}" r="3.5" fill="{color}"/>"#,
                    bx + 22.0
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.2}" y="{:.2}">{name}</text>"#,
                bx + 44.0,
                y + 4.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The smallest and largest of `values` (`(inf, -inf)` when there are none).
fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// One axis tick: its data value and, for major ticks, its label.
struct Tick {
    value: f64,
    label: Option<String>,
}

/// An axis: the data range it spans, its scale and its ticks.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<Tick>,
}

impl Axis {
    /// A linear axis over `[min, max]` widened to round tick values; `integer` keeps the tick
    /// step at 1 or more (for step counts). Equal ends get a padded range.
    fn linear(min: f64, max: f64, integer: bool) -> Self {
        let (mut lo, mut hi) = (min, max);
        if hi - lo <= hi.abs().max(lo.abs()) * 1e-12 {
            let pad = if integer || lo == 0.0 {
                1.0
            } else {
                lo.abs() * 0.1
            };
            if integer && lo < 1.0 {
                hi = lo + 1.0;
            } else {
                lo -= pad;
                hi += pad;
            }
        } else if !integer {
            // A small margin, so a curve at the extremes does not sit on the frame (never below
            // 0 for data that is not).
            let pad = (hi - lo) * 0.03;
            lo = if lo >= 0.0 {
                (lo - pad).max(0.0)
            } else {
                lo - pad
            };
            hi += pad;
        }
        let mut step = nice_step((hi - lo) / 5.0);
        if integer {
            step = step.max(1.0);
        }
        let (first, last) = ((lo / step).floor(), (hi / step).ceil());
        let (lo, hi) = (first * step, last * step);
        let decimals = (-step.log10().floor()).clamp(0.0, 12.0) as usize;
        let ticks = (0..=(last - first) as i64)
            .map(|i| {
                let value = (first + i as f64) * step;
                Tick {
                    value,
                    label: Some(format_number(value, decimals)),
                }
            })
            .collect();
        Self {
            lo,
            hi,
            log: false,
            ticks,
        }
    }

    /// A log10 axis over whole decades around `[min, max]` (`0 < min < max`): labelled ticks at
    /// the powers of ten (also at 2x and 5x when the axis spans few decades), minor ticks at the
    /// other multiples.
    fn log(min: f64, max: f64) -> Self {
        let (d0, d1) = (
            min.log10().floor(),
            max.log10().ceil().max(min.log10().floor() + 1.0),
        );
        let few = d1 - d0 <= 2.0;
        let mut ticks = Vec::new();
        for d in d0 as i32..=d1 as i32 {
            let base = 10f64.powi(d);
            let decimals = (-d).max(0) as usize;
            for m in 1..=9 {
                let value = base * m as f64;
                if d == d1 as i32 && m > 1 {
                    break;
                }
                let labelled = m == 1 || (few && (m == 2 || m == 5));
                ticks.push(Tick {
                    value,
                    label: labelled.then(|| format_number(value, decimals)),
                });
            }
        }
        Self {
            lo: 10f64.powf(d0),
            hi: 10f64.powf(d1),
            log: true,
            ticks,
        }
    }

    /// Where `v` sits on the axis, 0 at `lo` and 1 at `hi`.
    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }
}

/// A round tick step (1, 2 or 5 times a power of ten) of at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let frac = raw / mag;
    let nice = if frac <= 1.0 {
        1.0
    } else if frac <= 2.0 {
        2.0
    } else if frac <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// `v` with `decimals` digits after the point; no `-0`, scientific form for huge magnitudes.
fn format_number(v: f64, decimals: usize) -> String {
    if v.abs() >= 1e9 {
        return format!("{v:e}");
    }
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_owned()
    } else {
        s
    }
}

/// `text` with the five XML special characters escaped.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::Error;

    fn point(step: usize, train: Option<f64>, valid: Option<f64>) -> EvalPoint {
        EvalPoint {
            epoch: 1 + step / 100,
            iter: step % 100,
            step,
            tokens: step as u64 * 350,
            elapsed_s: step as f64 * 0.0123,
            lr: 20.0,
            train_ppl: train,
            valid_ppl: valid,
        }
    }

    /// A book-like run: train ppl falling from ~1000 to ~100, valid every 5th point.
    fn run(n: usize) -> Vec<EvalPoint> {
        (0..n)
            .map(|i| {
                let step = (i + 1) * 20;
                let train = 1000.0 * (-(i as f64) / 8.0).exp() + 90.0;
                let valid = (i % 5 == 4).then_some(train * 1.15);
                point(step, Some(train), valid)
            })
            .collect()
    }

    fn temp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("rnnlm-report-{tag}-{}", std::process::id()))
    }

    /// The numbers of a polyline's `points` attribute.
    fn polyline_points(svg: &str, class: &str) -> Vec<(f64, f64)> {
        let key = format!(r#"class="{class}""#);
        let line = svg
            .lines()
            .find(|l| l.starts_with("<polyline") && l.contains(&key))
            .unwrap_or_else(|| panic!("no {class} polyline in\n{svg}"));
        let pts = line.split(r#"points=""#).nth(1).unwrap();
        let pts = &pts[..pts.find('"').unwrap()];
        pts.split(' ')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
        let lower = svg.to_ascii_lowercase();
        assert!(!lower.contains("nan"), "{svg}");
        assert!(!lower.contains("inf"), "{svg}");
        // Every element opened is closed: self-closing tags, or matching open/close counts.
        for tag in ["g", "text"] {
            assert_eq!(
                svg.matches(&format!("<{tag} ")).count() + svg.matches(&format!("<{tag}>")).count(),
                svg.matches(&format!("</{tag}>")).count(),
                "<{tag}> balance"
            );
        }
        for tag in ["line", "rect", "circle", "polyline"] {
            let open = format!("<{tag} ");
            for (i, _) in svg.match_indices(&open) {
                let end = svg[i..].find('>').unwrap();
                assert!(svg[i..i + end].ends_with('/'), "unclosed <{tag}>");
            }
        }
        // All coordinates within the canvas.
        for class in ["train", "valid"] {
            if svg.contains(&format!(r#"class="{class}""#)) {
                for (x, y) in polyline_points(svg, class) {
                    assert!((LEFT - 0.01..=WIDTH - RIGHT + 0.01).contains(&x), "x {x}");
                    assert!((TOP - 0.01..=HEIGHT - BOTTOM + 0.01).contains(&y), "y {y}");
                }
            }
        }
    }

    #[test]
    fn csv_has_the_header_and_round_trips() {
        let points = vec![
            EvalPoint {
                epoch: 1,
                iter: 20,
                step: 20,
                tokens: 7000,
                elapsed_s: 0.123_456_789_012_345_68,
                lr: 0.1,
                train_ppl: Some(1_234.567_890_123_456_7),
                valid_ppl: None,
            },
            EvalPoint {
                epoch: 2,
                iter: 0,
                step: 42,
                tokens: 1 << 40,
                elapsed_s: 5.0,
                lr: 1e-7,
                train_ppl: None,
                valid_ppl: Some(1.0 / 3.0),
            },
        ];
        let text = csv(&points);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            CSV_HEADER,
            "epoch,iter,step,tokens,elapsed_s,lr,train_ppl,valid_ppl"
        );
        assert_eq!(lines.len(), 3);
        assert!(text.ends_with('\n'));
        assert!(lines[1].ends_with(",1234.5678901234567,"), "{}", lines[1]);
        assert!(
            lines[2].starts_with("2,0,42,1099511627776,5.0,1e-7,,"),
            "{}",
            lines[2]
        );

        let opt = |c: &str| (!c.is_empty()).then(|| c.parse::<f64>().unwrap());
        let parsed: Vec<EvalPoint> = lines[1..]
            .iter()
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                assert_eq!(c.len(), 8, "{l}");
                EvalPoint {
                    epoch: c[0].parse().unwrap(),
                    iter: c[1].parse().unwrap(),
                    step: c[2].parse().unwrap(),
                    tokens: c[3].parse().unwrap(),
                    elapsed_s: c[4].parse().unwrap(),
                    lr: c[5].parse().unwrap(),
                    train_ppl: opt(c[6]),
                    valid_ppl: opt(c[7]),
                }
            })
            .collect();
        assert_eq!(parsed, points);
        assert_eq!(csv(&[]), format!("{CSV_HEADER}\n"));
    }

    #[test]
    fn svg_draws_train_and_valid_curves() {
        let points = run(40);
        let svg = svg(&points, "SimpleRnnlm on PTB <train & valid>");
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("SimpleRnnlm on PTB &lt;train &amp; valid&gt;"));
        assert!(svg.contains(">iterations</text>") && svg.contains(">perplexity"));
        assert!(svg.contains(">train</text>") && svg.contains(">valid</text>"));
        let train = polyline_points(&svg, "train");
        let valid = polyline_points(&svg, "valid");
        assert_eq!(train.len(), 40);
        assert_eq!(valid.len(), 8);
        // A marker per validation point, plus the legend's.
        assert_eq!(svg.matches("<circle").count(), 8 + 1);
        // x grows with the step; y (screen) grows as perplexity falls.
        assert!(train.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        // Ranges 90..1300: linear (ratio < 20); tick labels are round numbers.
        assert!(!svg.contains("log scale"));
        assert!(svg.contains(">800</text>"), "{svg}");
    }

    #[test]
    fn svg_uses_a_log_scale_for_wide_ranges() {
        let points: Vec<EvalPoint> = (0..30)
            .map(|i| {
                let ppl = 10_000.0 * 0.8f64.powi(i) + 5.0;
                point(
                    i as usize * 10,
                    Some(ppl),
                    (i % 3 == 0).then_some(ppl * 1.2),
                )
            })
            .collect();
        let svg = svg(&points, "wide");
        assert_well_formed(&svg);
        assert!(svg.contains("(log scale)"));
        for label in [
            ">10</text>",
            ">100</text>",
            ">1000</text>",
            ">100000</text>",
        ] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        // Equal ratios are equal distances: 10 -> 100 as long as 100 -> 1000.
        let y_of = |label: &str| -> f64 {
            let i = svg
                .find(&format!(r#"text-anchor="end">{label}</text>"#))
                .unwrap();
            let start = svg[..i].rfind(" y=\"").unwrap() + 4;
            svg[start..start + svg[start..].find('"').unwrap()]
                .parse()
                .unwrap()
        };
        let (a, b, c) = (y_of("10"), y_of("100"), y_of("1000"));
        assert!(((a - b) - (b - c)).abs() < 0.05, "{a} {b} {c}");
    }

    #[test]
    fn svg_handles_degenerate_input() {
        // No points at all.
        let s = svg(&[], "empty");
        assert_well_formed(&s);
        assert!(s.contains("no data"));
        assert!(!s.contains("<polyline"));

        // Only non-finite or missing values: as empty.
        let bad = vec![
            point(1, Some(f64::NAN), None),
            point(2, Some(f64::INFINITY), Some(f64::NEG_INFINITY)),
            point(3, None, Some(f64::NAN)),
        ];
        let s = svg(&bad, "bad");
        assert_well_formed(&s);
        assert!(s.contains("no data"));

        // One point: both series present, drawn inside the plot.
        let one = vec![point(0, Some(123.0), Some(140.0))];
        let s = svg(&one, "one");
        assert_well_formed(&s);
        assert_eq!(s.matches("<polyline").count(), 2);
        assert_eq!(polyline_points(&s, "train").len(), 1);

        let one = vec![point(500, Some(123.0), None)];
        let s = svg(&one, "one train");
        assert_well_formed(&s);
        assert_eq!(s.matches("<polyline").count(), 1);
        assert!(!s.contains(">valid</text>"));

        // Constant values: no division by zero, the curve is flat and inside.
        let flat: Vec<EvalPoint> = (0..10)
            .map(|i| point(i * 5, Some(7.0), Some(7.0)))
            .collect();
        let s = svg(&flat, "flat");
        assert_well_formed(&s);
        let train = polyline_points(&s, "train");
        assert!(train.windows(2).all(|w| w[0].1 == w[1].1));

        // Zero perplexity (impossible, but) and NaN mixed in with good points.
        let mut mixed = run(12);
        mixed[3].train_ppl = Some(f64::NAN);
        mixed[5].train_ppl = Some(0.0);
        mixed[9].valid_ppl = Some(f64::INFINITY);
        let s = svg(&mixed, "mixed");
        assert_well_formed(&s);
        assert_eq!(polyline_points(&s, "train").len(), 11);
        assert_eq!(polyline_points(&s, "valid").len(), 1);
    }

    #[test]
    fn format_and_ticks() {
        assert_eq!(format_number(-0.0, 1), "0.0");
        assert_eq!(format_number(-0.000_01, 2), "0.00");
        assert_eq!(format_number(2500.0, 0), "2500");
        assert_eq!(format_number(0.25, 2), "0.25");
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(130.0), 200.0);
        let a = Axis::linear(3.0, 3.0, true);
        assert!(a.lo < 3.0 && a.hi > 3.0);
        let a = Axis::linear(0.0, 0.0, false);
        assert!(a.lo < 0.0 && a.hi > 0.0);
        let a = Axis::linear(0.0, 7.0, true);
        assert!(a.ticks.iter().all(|t| t.value.fract() == 0.0));
    }

    #[test]
    fn writes_files_atomically_and_reports_unwritable_paths() {
        let dir = temp("dir");
        std::fs::create_dir_all(&dir).unwrap();
        let points = run(10);
        let (c, s) = (dir.join("log.csv"), dir.join("ppl.svg"));
        write_csv(&c, &points).unwrap();
        write_svg(&s, &points, "t").unwrap();
        assert_eq!(std::fs::read_to_string(&c).unwrap(), csv(&points));
        assert_eq!(std::fs::read_to_string(&s).unwrap(), svg(&points, "t"));
        // Overwriting replaces the file; no temporary file is left beside it.
        write_csv(&c, &points[..2]).unwrap();
        assert_eq!(std::fs::read_to_string(&c).unwrap(), csv(&points[..2]));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["log.csv", "ppl.svg"]);
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = temp("no-such-dir").join("log.csv");
        for e in [
            write_csv(&missing, &points).unwrap_err(),
            write_svg(&missing, &points, "t").unwrap_err(),
        ] {
            match &e {
                Error::Io { path, .. } => assert_eq!(path, &missing),
                other => panic!("expected Error::Io, got {other:?}"),
            }
            assert!(e.to_string().contains("no-such-dir"), "{e}");
        }
    }
}
