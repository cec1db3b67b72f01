//! `--svg`: the run drawn with plotters' SVG backend.
//!
//! Owns: three kinds of chart, chosen by what the run measured. A time series (latency
//! percentiles, throughput, and CPU when the server's pid is known) for most scenarios; round
//! trip per step for `shootout`; server memory against connections with its fitted line for
//! `idle`. Text is left to the SVG viewer (plotters' naive font metrics), so no font files or
//! system libraries are needed.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Summary;

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A named, coloured line and the figure it plots.
type Line<T> = (&'static str, RGBColor, fn(&T) -> u64);

pub fn draw(path: &Path, s: &Summary) -> Result<(), String> {
    let result = if !s.steps.is_empty() {
        steps(path, s)
    } else if let Some(m) = s.memory.as_ref().filter(|m| m.points.len() > 1) {
        memory(path, s, m)
    } else {
        series(path, s)
    };
    result.map_err(|e| format!("{}: {e}", path.display()))
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        (0.0, 1.0)
    } else if (hi - lo).abs() < f64::EPSILON {
        (lo.min(0.0), hi + 1.0)
    } else {
        (lo.min(0.0), hi * 1.05)
    }
}

fn series(path: &Path, s: &Summary) -> DrawResult {
    // The measured phase only: setup seconds would squash the interesting part, and the last
    // second, mostly drain, would look like a collapse.
    let end = s.duration_s.max(1.0) + 0.5;
    let rows: Vec<_> = s.series.iter().filter(|r| r.t > 0.0 && r.t <= end).collect();
    let with_cpu = rows.iter().any(|r| r.server_cpu_pct.is_some()) || !rows.is_empty();
    let panels = if with_cpu { 3 } else { 2 };
    let root = SVGBackend::new(path, (960, 300 * panels as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels, 1));
    let (x0, x1) = range(rows.iter().map(|r| r.t));
    let title = format!("fanout-load {} {}", s.scenario, s.url);

    let ms = |us: u64| us as f64 / 1000.0;
    let (_, ymax) = range(rows.iter().map(|r| ms(r.p99_us).max(ms(r.max_us))));
    let mut chart = ChartBuilder::on(&areas[0])
        .caption(format!("{title}: {} latency per second (ms)", s.latency_kind), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0.0..ymax)?;
    chart.configure_mesh().x_desc("seconds").y_desc("ms").draw()?;
    let lines: [Line<crate::report::Row>; 4] = [
        ("p50", BLUE, |r| r.p50_us),
        ("p99", RED, |r| r.p99_us),
        ("p99.9", MAGENTA, |r| r.p999_us),
        ("max", BLACK, |r| r.max_us),
    ];
    for (name, color, get) in lines {
        chart
            .draw_series(LineSeries::new(rows.iter().map(|r| (r.t, ms(get(r)))), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;

    let (label, get): (&str, fn(&crate::report::Row) -> u64) = match s.scenario.as_str() {
        "connect" | "idle" => ("upgrades per second", |r| r.opened),
        _ => ("messages received per second", |r| r.received),
    };
    let (_, ymax) = range(rows.iter().map(|r| get(r) as f64));
    let mut chart = ChartBuilder::on(&areas[1])
        .caption(label, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, 0.0..ymax)?;
    chart.configure_mesh().x_desc("seconds").draw()?;
    chart.draw_series(LineSeries::new(rows.iter().map(|r| (r.t, get(r) as f64)), GREEN))?;

    if with_cpu {
        let (_, ymax) = range(rows.iter().map(|r| r.gen_cpu_pct.max(r.server_cpu_pct.unwrap_or(0.0))));
        let mut chart = ChartBuilder::on(&areas[2])
            .caption("CPU, % of one core", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, 0.0..ymax.max(100.0))?;
        chart.configure_mesh().x_desc("seconds").draw()?;
        chart
            .draw_series(LineSeries::new(rows.iter().map(|r| (r.t, r.gen_cpu_pct)), BLUE))?
            .label("generator")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        let server: Vec<(f64, f64)> = rows.iter().filter_map(|r| Some((r.t, r.server_cpu_pct?))).collect();
        if !server.is_empty() {
            chart
                .draw_series(LineSeries::new(server, RED))?
                .label("server")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    root.present()?;
    Ok(())
}

fn steps(path: &Path, s: &Summary) -> DrawResult {
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = range(s.steps.iter().map(|st| st.clients as f64));
    let ms = |us: u64| us as f64 / 1000.0;
    let (_, ymax) = range(s.steps.iter().map(|st| ms(st.rtt.max.min(60_000_000))));
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("fanout-load shootout {}: round trip per step (ms)", s.url), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0.0..ymax)?;
    chart.configure_mesh().x_desc("clients").y_desc("ms").draw()?;
    let lines: [Line<crate::stats::Step>; 3] =
        [("p50", BLUE, |st| st.rtt.p50), ("p95", RED, |st| st.rtt.p95), ("max", BLACK, |st| st.rtt.max)];
    for (name, color, get) in lines {
        chart
            .draw_series(LineSeries::new(s.steps.iter().map(|st| (st.clients as f64, ms(get(st)))), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn memory(path: &Path, s: &Summary, m: &crate::report::Memory) -> DrawResult {
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let (x0, x1) = range(m.points.iter().map(|p| p.0 as f64));
    let (_, ymax) = range(m.points.iter().map(|p| mib(p.1 as f64)));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("fanout-load idle {}: server RSS, {:.0} B per connection", s.url, m.bytes_per_conn),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0.0..ymax)?;
    chart.configure_mesh().x_desc("open connections").y_desc("MiB").draw()?;
    chart
        .draw_series(m.points.iter().map(|p| Circle::new((p.0 as f64, mib(p.1 as f64)), 4, BLUE.filled())))?
        .label("sampled RSS")
        .legend(|(x, y)| Circle::new((x + 10, y), 4, BLUE.filled()));
    let fit = |x: f64| mib(m.intercept_bytes + m.bytes_per_conn * x);
    chart
        .draw_series(LineSeries::new(vec![(x0, fit(x0)), (x1, fit(x1))], RED))?
        .label("least-squares fit")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
