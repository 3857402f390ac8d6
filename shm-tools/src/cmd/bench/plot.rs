//! `--plot FILE.svg`: round-trip latency against percentile, shmq beside its
//! floors, on a "nines" axis (50, 90, 99, 99.9, ...) and a log time axis.

use std::path::Path;

use plotters::prelude::*;

use super::harness::Latency;
use crate::error::{CliError, CliResult};

/// Map a percentile (0..100) to the "nines" axis: 90 → 1, 99 → 2, ...
fn nines(p: f64, cap: f64) -> f64 {
    if p >= 100.0 {
        cap
    } else {
        (-(1.0 - p / 100.0).log10()).min(cap)
    }
}

/// Draw the curves `(label, latency)` into an SVG file.
pub fn latency_svg(path: &Path, title: &str, series: &[(&str, &Latency)]) -> CliResult {
    let err = |e: &dyn std::fmt::Display| CliError::failed(format!("plot {}: {e}", path.display()));
    let cap = series
        .iter()
        .map(|(_, l)| (l.samples.max(10) as f64).log10())
        .fold(1.0f64, f64::max);
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, l)| l.curve.iter().map(|&(_, ns)| ns))
        .filter(|ns| *ns > 0.0)
        .fold((f64::MAX, 1.0f64), |(lo, hi), ns| (lo.min(ns), hi.max(ns)));
    if lo == f64::MAX {
        return Err(CliError::failed("plot: no latency samples to draw"));
    }
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..cap, ((lo * 0.8)..(hi * 1.25)).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("round trip (ns)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .x_labels(cap.ceil() as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            if *x < 0.5 {
                "0".to_string()
            } else {
                format!("{p:.*}", (x.round() as usize).saturating_sub(2))
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (label, lat)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<(f64, f64)> = lat
            .curve
            .iter()
            .filter(|(_, ns)| *ns > 0.0)
            .map(|&(p, ns)| (nines(p, cap), ns))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
