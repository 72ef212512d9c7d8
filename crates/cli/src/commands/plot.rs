//! `davinci plot RUN_DIR`: a run's curves in one SVG, from its `metrics.jsonl`: loss (raw
//! and smoothed), learning rate, gradient norm and tokens/s against the step counted over
//! the whole recipe, with a dashed line where each stage begins; other runs overlaid with
//! `--compare`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use davinci_train::metrics::{read_metrics, StepMetrics, METRICS_FILE};
use plotters::prelude::*;

#[derive(clap::Args)]
pub struct Args {
    /// A run's output directory (the one holding `metrics.jsonl`).
    run: PathBuf,
    /// Where to write the plot (an .svg file); by default `plot.svg` in the run directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Other runs to draw on the same axes.
    #[arg(long, num_args = 1..)]
    compare: Vec<PathBuf>,
    /// Weight of the past in the loss's exponential moving average (0: no smoothing).
    #[arg(long, default_value_t = 0.9)]
    smoothing: f64,
}

/// One run's series against its recipe-wide step.
struct Run {
    name: String,
    steps: Vec<StepMetrics>,
    /// The recipe-wide step at which each stage after the first begins, with its name.
    boundaries: Vec<(f64, String)>,
}

impl Run {
    fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(METRICS_FILE);
        let steps =
            read_metrics(&path).with_context(|| format!("reading the metrics of {}", dir.display()))?;
        if steps.is_empty() {
            bail!("{}: no steps recorded yet", path.display());
        }
        let boundaries = steps
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0].stage_index != w[1].stage_index)
            .map(|(i, w)| (i as f64 + 1.5, w[1].stage.clone()))
            .collect();
        Ok(Self { name: dir.display().to_string(), steps, boundaries })
    }

    /// `(recipe-wide step, value)` for every step where `value` gives a finite number.
    fn series(&self, value: impl Fn(&StepMetrics) -> f64) -> Vec<(f64, f64)> {
        let points = self.steps.iter().enumerate().map(|(i, m)| (i as f64 + 1.0, value(m)));
        points.filter(|(_, y)| y.is_finite()).collect()
    }
}

/// The exponential moving average TensorBoard's smoothing slider draws, debiased at the
/// start; it starts again at each stage, whose data differ.
fn smoothed_by_stage(run: &Run, points: &[(f64, f64)], weight: f64) -> Vec<Vec<(f64, f64)>> {
    let mut pieces: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for &(x, y) in points {
        if run.boundaries.iter().any(|(b, _)| (b + 0.5 - x).abs() < 1e-9) {
            pieces.push(Vec::new());
        }
        if let Some(piece) = pieces.last_mut() {
            piece.push((x, y));
        }
    }
    pieces.iter().map(|piece| smoothed(piece, weight)).collect()
}

fn smoothed(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let (mut average, mut norm) = (0.0, 0.0);
    points
        .iter()
        .map(|&(x, y)| {
            average = weight * average + (1.0 - weight) * y;
            norm = weight * norm + (1.0 - weight);
            (x, if norm > 0.0 { average / norm } else { y })
        })
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    if !(0.0..1.0).contains(&args.smoothing) {
        bail!("--smoothing must be in [0, 1), not {}", args.smoothing);
    }
    let out = args.out.clone().unwrap_or_else(|| args.run.join("plot.svg"));
    if out.extension().and_then(|e| e.to_str()) != Some("svg") {
        bail!(
            "{}: davinci writes SVG plots (a browser or TensorBoard's neighbour tools open them); \
             give a file ending in .svg",
            out.display()
        );
    }
    let mut runs = vec![Run::read(&args.run)?];
    for other in &args.compare {
        runs.push(Run::read(other)?);
    }
    draw(&runs, &out, args.smoothing).map_err(|e| anyhow::anyhow!("drawing {}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

type Panel<'a> = (&'static str, Box<dyn Fn(&StepMetrics) -> f64 + 'a>);

fn draw(runs: &[Run], out: &Path, smoothing: f64) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(out, (1280, 860)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels: [Panel; 4] = [
        ("loss", Box::new(|m| m.loss.unwrap_or(f64::NAN))),
        ("learning rate", Box::new(|m| m.lr)),
        ("gradient norm (before clipping)", Box::new(|m| m.grad_norm)),
        ("tokens/s", Box::new(|m| m.tokens_per_second)),
    ];
    for (area, (title, value)) in root.split_evenly((2, 2)).iter().zip(panels) {
        let series: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| r.series(&value)).collect();
        let points = series.iter().flatten();
        let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max);
        let (y_min, y_max) =
            points.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
        let (y_min, y_max) = if y_min < y_max { (y_min, y_max) } else { (y_min - 1.0, y_min + 1.0) };
        let pad = 0.05 * (y_max - y_min);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max + 1.0, (y_min - pad)..(y_max + pad))?;
        chart
            .configure_mesh()
            .x_desc("step (whole recipe)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, (run, points)) in runs.iter().zip(&series).enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let faint = if title == "loss" && smoothing > 0.0 { color.mix(0.3) } else { color };
            chart
                .draw_series(LineSeries::new(points.iter().copied(), faint.stroke_width(1)))?
                .label(run.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            if title == "loss" && smoothing > 0.0 {
                for piece in smoothed_by_stage(run, points, smoothing) {
                    chart.draw_series(LineSeries::new(piece, color.stroke_width(2)))?;
                }
            }
            for (x, stage) in &run.boundaries {
                let dashes = DashedLineSeries::new(
                    [(*x, y_min - pad), (*x, y_max + pad)],
                    6,
                    4,
                    color.mix(0.6).stroke_width(1),
                );
                chart.draw_series(dashes)?;
                chart.draw_series(std::iter::once(Text::new(
                    stage.clone(),
                    (*x, y_max + pad),
                    ("sans-serif", 13).into_font().color(&color),
                )))?;
            }
        }
        if runs.len() > 1 {
            chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::smoothed;

    #[test]
    fn smoothing_starts_at_the_first_value_and_follows_a_constant() {
        let flat = smoothed(&[(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)], 0.9);
        assert!(flat.iter().all(|&(_, y)| (y - 2.0).abs() < 1e-12));
        let step = smoothed(&[(1.0, 0.0), (2.0, 10.0)], 0.5);
        assert_eq!(step[0].1, 0.0);
        assert!((step[1].1 - 10.0 * 0.5 / 0.75).abs() < 1e-12);
    }
}
