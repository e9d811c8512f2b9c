//! `skiff-bench plot`: draws requests/s against the number of clients as a PNG line
//! chart, one line per (system, workload), from a small CSV the compare script writes.
//!
//! Labels are rendered with a TrueType font read from `--font` (no system font lookup),
//! so the chart has readable axes and legend wherever that one file exists; a missing or
//! unreadable font is an error, never a chart without text.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;

use crate::cli::PlotOpts;

/// One line of the chart: (clients, requests/s) points, sorted by clients.
type Lines = BTreeMap<(String, String), Vec<(u32, f64)>>;

/// Parses `system,workload,clients,requests_per_s` lines after a header; lines whose
/// figure is not a number (a failed run) are skipped, so a line may have gaps.
pub fn parse_csv(text: &str) -> Result<Lines> {
    let mut lines: Lines = BTreeMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [system, workload, clients, rps] = f[..] else {
            bail!("line {}: expected 4 comma-separated fields", n + 1);
        };
        let clients: u32 = clients
            .parse()
            .with_context(|| format!("line {}: clients {clients:?}", n + 1))?;
        let Ok(rps) = rps.parse::<f64>() else {
            continue;
        };
        lines
            .entry((system.to_string(), workload.to_string()))
            .or_default()
            .push((clients, rps));
    }
    for points in lines.values_mut() {
        points.sort_by_key(|p| p.0);
    }
    if lines.is_empty() {
        bail!("no numeric points in the input");
    }
    Ok(lines)
}

/// One hue per system (blue, red, green, purple), a darker and a lighter shade for its
/// first and second workload, so a reader can tell systems apart at a glance.
fn color(system: usize, workload: usize) -> RGBColor {
    const SHADES: [[RGBColor; 2]; 4] = [
        [RGBColor(31, 88, 180), RGBColor(110, 170, 235)],
        [RGBColor(200, 30, 30), RGBColor(250, 140, 60)],
        [RGBColor(30, 130, 30), RGBColor(130, 200, 90)],
        [RGBColor(120, 60, 170), RGBColor(190, 150, 230)],
    ];
    SHADES[system % SHADES.len()][workload % 2]
}

pub fn run(o: &PlotOpts) -> Result<()> {
    let text = std::fs::read_to_string(&o.input)
        .with_context(|| format!("reading {}", o.input.display()))?;
    let lines = parse_csv(&text)?;
    let font = std::fs::read(&o.font)
        .with_context(|| format!("reading the font {} (see --font)", o.font.display()))?;
    // plotters keeps registered fonts for the life of the process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("{} is not a usable TrueType font", o.font.display()))?;

    let max_clients = lines
        .values()
        .flatten()
        .map(|p| p.0)
        .max()
        .unwrap_or(1)
        .max(2);
    let max_rps = lines
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(0.0, f64::max)
        .max(1.0);

    let root = BitMapBackend::new(&o.out, (1000, 650)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", o.out.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&o.title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(
            (1u32..max_clients + max_clients / 3).log_scale(),
            0.0..max_rps * 1.1,
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (log scale)")
        .y_desc("requests/s")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    // Keys are sorted by (system, workload), so dedup leaves each name once.
    let mut systems: Vec<&String> = lines.keys().map(|k| &k.0).collect();
    systems.dedup();
    let mut workloads: Vec<&String> = lines.keys().map(|k| &k.1).collect();
    workloads.sort();
    workloads.dedup();
    let position = |names: &[&String], name: &String| names.iter().position(|n| *n == name);
    for ((system, workload), points) in &lines {
        let c = color(
            position(&systems, system).unwrap_or(0),
            position(&workloads, workload).unwrap_or(0),
        );
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)).point_size(4))
            .map_err(|e| err(&e))?
            .label(format!("{system} {workload}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_groups_lines_and_skips_failed_points() {
        let lines = parse_csv(
            "system,workload,clients,requests_per_s\n\
             etcd,put,10,200.5\netcd,put,1,50\nSkiff,put,1,failed (exit 3)\nSkiff,put,10,300\n",
        )
        .expect("parses");
        assert_eq!(
            lines.get(&("etcd".into(), "put".into())),
            Some(&vec![(1, 50.0), (10, 200.5)])
        );
        assert_eq!(
            lines.get(&("Skiff".into(), "put".into())),
            Some(&vec![(10, 300.0)])
        );
        assert!(parse_csv("h\na,b,c\n").is_err());
        assert!(parse_csv("h\n").is_err());
    }
}
