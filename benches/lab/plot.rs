//! `plot`: docs/plots/*.png from the results.

use crate::args::Args;
use crate::common::{ROOT, load, pct};
use crate::converge::ConvergeResult;
use crate::fanout::FanoutResult;
use crate::latency::LatencyResult;
use anyhow::{Context as _, Result, anyhow};
use std::fs;
use std::path::{Path, PathBuf};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn register_font() -> Result<()> {
    let bytes = fs::read(FONT).with_context(|| {
        format!("{FONT} (Debian package fonts-dejavu-core) is needed for the plots' text")
    })?;
    plotters::style::register_font(
        "sans-serif",
        plotters::style::FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT}: not a usable font"))
}

pub(crate) fn run(args: &Args) -> Result<()> {
    register_font()?;
    let dir = args
        .opts
        .get("plots")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("docs/plots"));
    fs::create_dir_all(&dir)?;
    if let Some(l) = load::<LatencyResult>(args, "latency")? {
        plot_latency(&dir.join("latency_cdf.png"), &l)?;
    }
    if let Some(f) = load::<FanoutResult>(args, "fanout")? {
        plot_lines(
            &dir.join("fanout.png"),
            "Query fan-out: request to N responders until all N answers are in",
            "responders N",
            "ms",
            &[
                (
                    "all answers, p99",
                    f.rounds.iter().map(|r| (r.n as f64, r.all.p99)).collect(),
                ),
                (
                    "all answers, p50",
                    f.rounds.iter().map(|r| (r.n as f64, r.all.p50)).collect(),
                ),
                (
                    "first answer, p50",
                    f.rounds.iter().map(|r| (r.n as f64, r.first.p50)).collect(),
                ),
            ],
            Some(("goal: p99 <= 50 ms at N = 50", 50.0)),
        )?;
    }
    if let Some(c) = load::<ConvergeResult>(args, "converge")? {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let cpu_label = format!("CPU time of all pigeons / {cores} cores");
        plot_lines(
            &dir.join("convergence.png"),
            "Discovery: N pigeons started together, until every pigeon has proven all",
            "pigeons N",
            "seconds",
            &[
                (
                    "last pigeon",
                    c.rounds
                        .iter()
                        .filter(|r| r.proven_per_pigeon.n > 0)
                        .map(|r| (r.n as f64, r.proven_per_pigeon.max / 1000.0))
                        .collect(),
                ),
                (
                    "median pigeon",
                    c.rounds
                        .iter()
                        .filter(|r| r.proven_per_pigeon.n > 0)
                        .map(|r| (r.n as f64, r.proven_per_pigeon.p50 / 1000.0))
                        .collect(),
                ),
                (
                    &cpu_label,
                    c.rounds
                        .iter()
                        .map(|r| (r.n as f64, r.pigeon_cpu_s / cores))
                        .collect(),
                ),
            ],
            Some(("goal: <= 3 s at N = 100", 3.0)),
        )?;
    }
    eprintln!("lab-bench: plots in {}", dir.display());
    Ok(())
}

const COLORS: [plotters::style::RGBColor; 4] = [
    plotters::style::RGBColor(0x1f, 0x77, 0xb4),
    plotters::style::RGBColor(0xd6, 0x27, 0x28),
    plotters::style::RGBColor(0x2c, 0xa0, 0x2c),
    plotters::style::RGBColor(0x7f, 0x7f, 0x7f),
];

fn plot_latency(path: &Path, l: &LatencyResult) -> Result<()> {
    use plotters::prelude::*;
    let series = [
        ("pigeon, directed (answer to one peer)", &l.samples_directed),
        ("pigeon, broadcast (to every peer)", &l.samples_broadcast),
        ("floor: Redis hop + UDP + Redis hop", &l.samples_floor),
    ];
    let mut xmax: f64 = 0.0;
    for (_, s) in &series {
        let mut v = s.to_vec();
        v.sort_by(f64::total_cmp);
        xmax = xmax.max(pct(&v, 0.999));
    }
    let xmax = (xmax * 1.1).max(0.1);
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Slips publish on host A -> go_data at host B's Slips ({} messages each)",
                l.count
            ),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms); x axis cut at the largest p99.9")
        .y_desc("fraction of messages")
        .label_style(("sans-serif", 16))
        .draw()?;
    for (i, (name, s)) in series.iter().enumerate() {
        let mut v = s.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let color = COLORS[i];
        chart
            .draw_series(LineSeries::new(
                v.iter()
                    .enumerate()
                    .map(|(k, x)| (x.min(xmax), (k + 1) as f64 / n)),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

type Series = Vec<(f64, f64)>;

fn plot_lines(
    path: &Path,
    title: &str,
    xdesc: &str,
    ydesc: &str,
    series: &[(&str, Series)],
    goal: Option<(&str, f64)>,
) -> Result<()> {
    use plotters::prelude::*;
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let xmax = xs.fold(1.0f64, f64::max) * 1.1;
    let ys = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let ymax = ys
        .filter(|y| y.is_finite())
        .fold(goal.map_or(1.0, |g| g.1), f64::max)
        * 1.15;
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc(xdesc)
        .y_desc(ydesc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 16))
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied().filter(|p| p.1.is_finite()),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart.draw_series(
            pts.iter()
                .copied()
                .filter(|p| p.1.is_finite())
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    if let Some((label, y)) = goal {
        let style = BLACK.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new([(0.0, y), (xmax, y)], 12, 8, style))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
