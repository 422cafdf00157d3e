//! The sweep chart (`chart.svg`, `chart.png`): four panels against concurrency (or request
//! rate for open-loop sweeps): throughput, TTFT percentiles, latency percentiles, failures.
//! Drawn with plotters; the PNG's text uses the DejaVu Sans font shipped in `assets/`
//! (license beside it), so it renders the same on any host. It draws; it computes nothing.
//! With an SLO search the fourth panel is the attainment of each step (met green, missed red)
//! against the target, and the title names the capacity found; points are drawn in load order
//! whatever order the steps ran in.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::summary::{LevelStats, SearchSummary};

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cannot draw the chart {path}: {reason}")]
    Draw { path: String, reason: String },
}

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the bundled font for plotters' text (every chart of the crate calls this).
pub fn register_font() {
    REGISTER.call_once(|| {
        // The font is compiled in and known good; a failure here would only lose PNG text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

const SIZE: (u32, u32) = (1200, 800);

/// The chart as an SVG document.
pub fn svg(
    levels: &[LevelStats],
    search: Option<&SearchSummary>,
    title: &str,
) -> Result<String, ChartError> {
    register_font();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(&root, levels, search, title)
            .map_err(|reason| ChartError::Draw { path: "chart.svg".into(), reason })?;
        root.present()
            .map_err(|e| ChartError::Draw { path: "chart.svg".into(), reason: e.to_string() })?;
    }
    Ok(out)
}

/// Writes the chart as a PNG file.
pub fn png(
    levels: &[LevelStats],
    search: Option<&SearchSummary>,
    title: &str,
    path: &Path,
) -> Result<(), ChartError> {
    register_font();
    let err = |reason: String| ChartError::Draw { path: path.display().to_string(), reason };
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    draw(&root, levels, search, title).map_err(err)?;
    root.present().map_err(|e| err(e.to_string()))
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// `SLO search: best c=8 (bracketed)`.
fn search_title(s: &SearchSummary) -> String {
    let best = s.best.as_ref().map_or_else(
        || "none met".to_string(),
        |b| match (b.parallel, b.rate) {
            (_, Some(r)) => format!("best rate={r}/s"),
            (Some(c), None) => format!("best c={c}"),
            (None, None) => "-".into(),
        },
    );
    format!("SLO search: {best} ({})", s.stop.as_deref().unwrap_or("running"))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    levels: &[LevelStats],
    search: Option<&SearchSummary>,
    title: &str,
) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let title = match search {
        Some(s) => format!("{title} — {}", search_title(s)),
        None => title.to_string(),
    };
    let root = root.titled(&title, ("sans-serif", 22)).map_err(|x| e(&x))?;
    let open = levels.iter().all(|l| l.rate.is_some()) && !levels.is_empty();
    let xdesc = if open { "request rate (req/s)" } else { "concurrency" };
    let x = |l: &LevelStats| if open { l.rate.unwrap_or(0.0) } else { l.parallel as f64 };
    // In load order: a search's steps run out of order.
    let mut sorted: Vec<&LevelStats> = levels.iter().collect();
    sorted.sort_by(|a, b| x(a).total_cmp(&x(b)));
    let pts = |f: fn(&LevelStats) -> f64| sorted.iter().map(|l| (x(l), f(l))).collect::<Vec<_>>();
    let step_pts = |met: bool| -> Vec<(f64, f64)> {
        let Some(s) = search else { return Vec::new() };
        let mut v: Vec<(f64, f64)> = s
            .steps
            .iter()
            .filter(|st| st.met == met)
            .map(|st| (st.rate.unwrap_or(st.parallel.unwrap_or(0) as f64), st.attainment * 100.0))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let fourth: (&str, &str, Vec<Series>) = match search {
        Some(s) => (
            "SLO attainment",
            "% of requests",
            vec![
                ("met", GREEN, step_pts(true)),
                ("missed", RED, step_pts(false)),
                (
                    "target",
                    BLACK,
                    sorted.iter().map(|l| (x(l), s.attainment * 100.0)).collect::<Vec<_>>(),
                ),
            ],
        ),
        None => (
            "failures",
            "requests",
            vec![
                ("failed", RED, pts(|l| l.failed as f64)),
                ("not sent", MAGENTA, pts(|l| l.not_sent as f64)),
            ],
        ),
    };
    let panels: [(&str, &str, Vec<Series>); 4] = [
        (
            "throughput",
            "tokens/s and req/s",
            vec![
                ("output tok/s", BLUE, pts(|l| l.output_throughput)),
                ("total tok/s", CYAN, pts(|l| l.total_throughput)),
                ("req/s", GREEN, pts(|l| l.qps)),
            ],
        ),
        (
            "time to first token",
            "ms",
            vec![
                ("p50", GREEN, pts(|l| l.ttft_s.p50 * 1e3)),
                ("p90", BLUE, pts(|l| l.ttft_s.p90 * 1e3)),
                ("p99", RED, pts(|l| l.ttft_s.p99 * 1e3)),
            ],
        ),
        (
            "end-to-end latency",
            "s",
            vec![
                ("p50", GREEN, pts(|l| l.latency_s.p50)),
                ("p90", BLUE, pts(|l| l.latency_s.p90)),
                ("p99", RED, pts(|l| l.latency_s.p99)),
            ],
        ),
        fourth,
    ];
    let areas = root.split_evenly((2, 2));
    let (xmin, xmax) =
        levels.iter().map(x).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (xmin, xmax) = if levels.is_empty() {
        (0.0, 1.0)
    } else if xmin == xmax {
        (xmin - 1.0, xmax + 1.0)
    } else {
        (xmin, xmax)
    };
    let pad = (xmax - xmin) * 0.03;
    for (area, (caption, ydesc, series)) in areas.iter().zip(panels) {
        let ymax = series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(0.0f64, f64::max);
        let ymax = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((xmin - pad)..(xmax + pad), 0.0..ymax)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc(xdesc)
            .y_desc(ydesc)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|x| e(&x))?;
        for (name, color, points) in series {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|x| e(&x))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|x| e(&x))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels() -> Vec<LevelStats> {
        [8u64, 16, 32]
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let mut l = LevelStats {
                    parallel: c,
                    qps: c as f64 / 2.0,
                    output_throughput: c as f64 * 40.0,
                    failed: i as u64,
                    ..Default::default()
                };
                l.ttft_s.p99 = 0.1 * c as f64;
                l.latency_s.p50 = c as f64;
                l
            })
            .collect()
    }

    #[test]
    fn svg_has_the_four_panels_and_a_point_per_level() {
        let s = svg(&levels(), None, "sweep").unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..60.min(s.len())]);
        for caption in
            ["throughput", "time to first token", "end-to-end latency", "failures", "concurrency"]
        {
            assert!(s.contains(caption), "missing {caption}");
        }
        // 3 levels x (3 + 3 + 3 + 2) series = 33 markers.
        assert_eq!(s.matches("<circle").count(), 33);
    }

    #[test]
    fn a_search_draws_its_attainment_per_step_and_names_the_capacity() {
        use crate::summary::SearchStep;
        let step = |c: u64, a: f64, met: bool| SearchStep {
            parallel: Some(c),
            attainment: a,
            met,
            ..SearchStep::default()
        };
        let search = SearchSummary {
            kind: "concurrency".into(),
            attainment: 0.95,
            // Ran out of order, as a bisection does.
            steps: vec![step(8, 1.0, true), step(32, 0.5, false), step(16, 0.97, true)],
            best: Some(step(16, 0.97, true)),
            stop: Some("max_steps".into()),
            ..SearchSummary::default()
        };
        let mut lv = levels();
        lv.swap(1, 2);
        let s = svg(&lv, Some(&search), "sweep").unwrap();
        assert!(s.contains("SLO attainment") && !s.contains("failures"));
        assert!(s.contains("SLO search: best c=16 (max_steps)"));
        // 3 levels x 9 series in three panels + 2 met + 1 missed + 3 target markers.
        assert_eq!(s.matches("<circle").count(), 27 + 6);
    }

    #[test]
    fn png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        png(&levels(), None, "sweep", &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 10_000, "{}", bytes.len());
        // A single level and no levels still draw.
        png(&levels()[..1], None, "one", &path).unwrap();
        assert!(svg(&[], None, "none").is_ok());
    }
}
