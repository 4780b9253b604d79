//! `aiaas-report`: turns the JSON lines of one `bench/compare.sh` run (load-generator levels,
//! bandwidth probes, resident sizes) into a markdown table of medians over repetitions, the
//! ratios the performance targets are stated in, and an SVG chart (output tokens/s and TTFT p50
//! against concurrency, one line per server).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use aiaas_admin::console::charts::escape;
use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(about = "Medians, ratios and a chart from a compare.sh run")]
struct Args {
    /// The JSON lines of the run (other lines are skipped).
    raw: PathBuf,
    /// Where to write `chart.svg` (the table goes to stdout).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// aiaas with auth, limits and ledger on.
    #[arg(long, default_value = "aiaas")]
    ours: String,
    /// aiaas with them off.
    #[arg(long, default_value = "aiaas-bare")]
    bare: String,
    /// The peers, in the order of the ratios.
    #[arg(
        long,
        default_value = "mistralrs-server,llama.cpp",
        value_delimiter = ','
    )]
    peers: Vec<String>,
    /// The peer the single-stream target is measured against.
    #[arg(long, default_value = "llama.cpp")]
    target_peer: String,
    /// Thread count whose bandwidth is the ceiling (the servers' thread count).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Only a table of medians with one row per server (no ratios or targets).
    #[arg(long)]
    only_table: bool,
}

#[derive(Debug, Deserialize)]
struct Level {
    label: String,
    concurrency: usize,
    requests: usize,
    errors: usize,
    output_tokens_per_s: f64,
    ttft_p50_ms: f64,
    itl_p50_ms: f64,
    mean_output_tokens: f64,
    #[serde(default)]
    mean_prompt_tokens: f64,
}

#[derive(Debug, Deserialize)]
struct Bandwidth {
    threads: usize,
    read_gb_per_s: f64,
    tokens_per_s_ceiling: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Resident {
    rss: String,
    rss_kib: u64,
    hwm_kib: u64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Medians over repetitions of one server at one concurrency.
#[derive(Debug, Clone, Copy)]
struct Point {
    tokens_per_s: f64,
    ttft_ms: f64,
    itl_ms: f64,
    output_tokens: f64,
    prompt_tokens: f64,
    reps: usize,
    errors: usize,
    requests: usize,
}

struct Run {
    /// Server → concurrency → medians, servers in order of first appearance.
    servers: Vec<(String, BTreeMap<usize, Point>)>,
    bandwidth: Vec<Bandwidth>,
    resident: Vec<Resident>,
}

fn read(path: &PathBuf) -> anyhow::Result<Run> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    let mut levels: Vec<Level> = Vec::new();
    let mut bandwidth = Vec::new();
    let mut resident = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        if let Ok(level) = serde_json::from_str::<Level>(line) {
            levels.push(level);
        } else if let Ok(probe) = serde_json::from_str::<Bandwidth>(line) {
            bandwidth.push(probe);
        } else if let Ok(rss) = serde_json::from_str::<Resident>(line) {
            resident.push(rss);
        }
    }
    let mut order: Vec<String> = Vec::new();
    let mut grouped: BTreeMap<(String, usize), Vec<&Level>> = BTreeMap::new();
    for level in &levels {
        if !order.contains(&level.label) {
            order.push(level.label.clone());
        }
        grouped
            .entry((level.label.clone(), level.concurrency))
            .or_default()
            .push(level);
    }
    let servers = order
        .into_iter()
        .map(|label| {
            let points = grouped
                .iter()
                .filter(|((l, _), _)| *l == label)
                .map(|((_, conc), reps)| {
                    let m = |f: fn(&Level) -> f64| median(reps.iter().map(|r| f(r)).collect());
                    let point = Point {
                        tokens_per_s: m(|r| r.output_tokens_per_s),
                        ttft_ms: m(|r| r.ttft_p50_ms),
                        itl_ms: m(|r| r.itl_p50_ms),
                        output_tokens: m(|r| r.mean_output_tokens),
                        prompt_tokens: m(|r| r.mean_prompt_tokens),
                        reps: reps.len(),
                        errors: reps.iter().map(|r| r.errors).sum(),
                        requests: reps.iter().map(|r| r.requests).sum(),
                    };
                    (*conc, point)
                })
                .collect();
            (label, points)
        })
        .collect();
    Ok(Run {
        servers,
        bandwidth,
        resident,
    })
}

impl Run {
    fn point(&self, label: &str, conc: usize) -> Option<Point> {
        self.servers
            .iter()
            .find(|(l, _)| l == label)
            .and_then(|(_, points)| points.get(&conc).copied())
    }

    fn levels(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self
            .servers
            .iter()
            .flat_map(|(_, p)| p.keys().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The best-pass bandwidth at `threads`, median over the probes of the run.
    fn ceiling(&self, threads: usize) -> Option<(f64, f64)> {
        let probes: Vec<&Bandwidth> = self
            .bandwidth
            .iter()
            .filter(|b| b.threads == threads)
            .collect();
        if probes.is_empty() {
            return None;
        }
        let gbs = median(probes.iter().map(|b| b.read_gb_per_s).collect());
        let tps = median(
            probes
                .iter()
                .filter_map(|b| b.tokens_per_s_ceiling)
                .collect(),
        );
        Some((gbs, tps))
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// A markdown table with one row per server and one column per concurrency level; `cell`
/// renders a level's medians (missing levels show a dash).
fn by_server(
    run: &Run,
    corner: &str,
    column: impl Fn(usize) -> String,
    cell: impl Fn(&Point) -> String,
) -> String {
    let levels = run.levels();
    let mut out = format!("| {corner} |");
    for &conc in &levels {
        let _ = write!(out, " {} |", column(conc));
    }
    out.push_str("\n|---|");
    for _ in &levels {
        out.push_str("---|");
    }
    out.push('\n');
    for (label, points) in &run.servers {
        let _ = write!(out, "| {label} |");
        for conc in &levels {
            match points.get(conc) {
                Some(p) => {
                    let _ = write!(out, " {} |", cell(p));
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

/// One row per server (for many variants at few concurrency levels).
fn rows(run: &Run) -> String {
    by_server(
        run,
        "variant",
        |conc| format!("conc {conc}: tok/s, TTFT p50 ms, ITL p50 ms"),
        |p| format!("{:.1}, {:.0}, {:.1}", p.tokens_per_s, p.ttft_ms, p.itl_ms),
    )
}

fn table(run: &Run, args: &Args) -> String {
    if args.only_table {
        return rows(run);
    }
    let mut out = String::new();
    let levels = run.levels();
    out.push_str("Medians over repetitions: output tokens/s (all streams together) / TTFT p50 ms / ITL p50 ms.\n\n| conc |");
    for (label, _) in &run.servers {
        let _ = write!(out, " {label} |");
    }
    out.push_str("\n|---|");
    for _ in &run.servers {
        out.push_str("---|");
    }
    out.push('\n');
    for &conc in &levels {
        let _ = write!(out, "| {conc} |");
        for (label, _) in &run.servers {
            match run.point(label, conc) {
                Some(p) => {
                    let errors = if p.errors > 0 {
                        format!(" ({} errors)", p.errors)
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        out,
                        " {:.1} / {:.0} / {:.1}{errors} |",
                        p.tokens_per_s, p.ttft_ms, p.itl_ms
                    );
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out.push_str("\nPer request (medians): prompt tokens as the server counted them / output tokens; requests measured over all repetitions.\n\n");
    out.push_str(&by_server(
        run,
        "server",
        |conc| format!("conc {conc}"),
        |p| {
            let prompt = if p.prompt_tokens > 0.0 {
                format!("{:.0}", p.prompt_tokens)
            } else {
                "?".into()
            };
            format!(
                "{prompt} / {:.0} ({} reqs, {} reps)",
                p.output_tokens, p.requests, p.reps
            )
        },
    ));

    let tps = |label: &str, conc: usize| run.point(label, conc).map(|p| p.tokens_per_s);
    let ttft = |label: &str, conc: usize| run.point(label, conc).map(|p| p.ttft_ms);
    out.push_str("\nRatios of output tokens/s:\n\n| conc |");
    let mut columns: Vec<(String, String)> = args
        .peers
        .iter()
        .map(|peer| (args.ours.clone(), peer.clone()))
        .collect();
    columns.push((args.ours.clone(), args.bare.clone()));
    for (a, b) in &columns {
        let _ = write!(out, " {a} / {b} |");
    }
    out.push_str(" TTFT p50 ");
    let _ = write!(out, "{} − {} (ms) |\n|---|", args.ours, args.bare);
    for _ in 0..=columns.len() {
        out.push_str("---|");
    }
    out.push('\n');
    for &conc in &levels {
        let _ = write!(out, "| {conc} |");
        for (a, b) in &columns {
            let _ = write!(out, " {} |", ratio(tps(a, conc), tps(b, conc)));
        }
        match (ttft(&args.ours, conc), ttft(&args.bare, conc)) {
            (Some(a), Some(b)) => {
                let _ = writeln!(out, " {:+.1} |", a - b);
            }
            _ => out.push_str(" – |\n"),
        }
    }

    out.push_str("\nBatching: output tokens/s at concurrency 8 over concurrency 1: ");
    let batching: Vec<String> = run
        .servers
        .iter()
        .map(|(label, _)| format!("{label} {}", ratio(tps(label, 8), tps(label, 1))))
        .collect();
    out.push_str(&batching.join(", "));
    out.push_str(".\n");

    if !run.bandwidth.is_empty() {
        out.push_str("\nMemory read bandwidth (best pass, median over the probes of this run): ");
        let mut threads: Vec<usize> = run.bandwidth.iter().map(|b| b.threads).collect();
        threads.sort_unstable();
        threads.dedup();
        let parts: Vec<String> = threads
            .iter()
            .filter_map(|&t| {
                run.ceiling(t).map(|(gbs, tps)| {
                    if tps.is_finite() {
                        format!("{t} thread(s) {gbs:.1} GB/s (ceiling {tps:.0} tokens/s)")
                    } else {
                        format!("{t} thread(s) {gbs:.1} GB/s")
                    }
                })
            })
            .collect();
        out.push_str(&parts.join(", "));
        out.push_str(".\n");
    }

    if !run.resident.is_empty() {
        out.push_str("\nResident memory after the run: ");
        let parts: Vec<String> = run
            .resident
            .iter()
            .map(|r| {
                format!(
                    "{} {:.0} MiB (peak {:.0} MiB)",
                    r.rss,
                    r.rss_kib as f64 / 1024.0,
                    r.hwm_kib as f64 / 1024.0
                )
            })
            .collect();
        out.push_str(&parts.join(", "));
        out.push_str(".\n");
    }

    out.push_str("\nTargets:\n\n");
    let single = tps(&args.ours, 1);
    if let (Some(ours), Some(llama)) = (single, tps(&args.target_peer, 1)) {
        let _ = writeln!(
            out,
            "- single stream ≥ {}: {ours:.1} vs {llama:.1} tokens/s ({:.2}×): {}",
            args.target_peer,
            ours / llama,
            verdict(ours >= llama)
        );
    }
    if let (Some(ours), Some((_, ceiling))) = (single, run.ceiling(args.threads)) {
        if ceiling.is_finite() {
            let _ = writeln!(
                out,
                "- single stream ≥ 50% of the bandwidth ceiling ({} threads): {:.1}%: {}",
                args.threads,
                100.0 * ours / ceiling,
                verdict(ours >= 0.5 * ceiling)
            );
            // The ceiling is one read of the weights per generated token, i.e. decoding; the
            // tokens/s above also include the prompt's prefill (its time to first token).
            if let Some(itl) = run.point(&args.ours, 1).map(|p| p.itl_ms) {
                let decode = 1e3 / itl;
                let _ = writeln!(
                    out,
                    "  - decoding alone (1000 / ITL p50 = {decode:.1} tokens/s, prefill excluded): {:.1}% of the ceiling: {}",
                    100.0 * decode / ceiling,
                    verdict(decode >= 0.5 * ceiling)
                );
            }
        }
    }
    if let (Some(one), Some(eight)) = (single, tps(&args.ours, 8)) {
        let _ = writeln!(
            out,
            "- concurrency 8 ≥ 3× single stream: {:.2}×: {}",
            eight / one,
            verdict(eight >= 3.0 * one)
        );
    }
    if let (Some(on), Some(off)) = (single, tps(&args.bare, 1)) {
        let dt = ttft(&args.ours, 1).zip(ttft(&args.bare, 1));
        let _ = writeln!(
            out,
            "- layer tax at concurrency 1: tokens/s {:.3} (≥ 0.97: {}), TTFT p50 {:+.1} ms (≤ 2 ms: {})",
            on / off,
            verdict(on / off >= 0.97),
            dt.map_or(f64::NAN, |(a, b)| a - b),
            verdict(dt.is_some_and(|(a, b)| a - b <= 2.0))
        );
    }
    if let Some(r) = run.resident.iter().find(|r| r.rss == args.ours) {
        let _ = writeln!(
            out,
            "- resident size of {} < 1 GiB: peak {:.0} MiB: {}",
            args.ours,
            r.hwm_kib as f64 / 1024.0,
            verdict(r.hwm_kib < 1024 * 1024)
        );
    }
    out
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// One panel: a value against concurrency (log2 axis), one line per server.
fn panel(svg: &mut String, run: &Run, origin: (f64, f64), title: &str, value: fn(&Point) -> f64) {
    let (ox, oy) = origin;
    let (w, h) = (380.0, 250.0);
    let levels = run.levels();
    let max = run
        .servers
        .iter()
        .flat_map(|(_, p)| p.values().map(value))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let top = nice_ceiling(max);
    let lx = |conc: usize| {
        let first = (*levels.first().unwrap_or(&1) as f64).log2();
        let last = (*levels.last().unwrap_or(&1) as f64).log2();
        let span = (last - first).max(1.0);
        ox + ((conc as f64).log2() - first) / span * w
    };
    let ly = |v: f64| oy + h - v / top * h;
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="14" text-anchor="middle">{title}</text>"#,
        ox + w / 2.0,
        oy - 12.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{ox}" y="{oy}" width="{w}" height="{h}" fill="none" stroke="#888"/>"##
    );
    for i in 0..=4 {
        let v = top * i as f64 / 4.0;
        let y = ly(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{ox}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"##,
            ox + w,
            ox - 5.0,
            y + 4.0,
            format_tick(v)
        );
    }
    for &conc in &levels {
        let x = lx(conc);
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{}" font-size="11" text-anchor="middle">{conc}</text>"#,
            oy + h + 15.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">concurrent streams</text>"#,
        ox + w / 2.0,
        oy + h + 32.0
    );
    for (i, (_, points)) in run.servers.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|(_, p)| value(p).is_finite())
            .map(|(&conc, p)| format!("{:.1},{:.1}", lx(conc), ly(value(p))))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for point in &path {
            let (x, y) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
        }
    }
}

fn nice_ceiling(max: f64) -> f64 {
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn format_tick(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn chart(run: &Run, caption: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="960" height="390" viewBox="0 0 960 390" font-family="sans-serif">"#
    );
    svg.push_str(r#"<rect width="960" height="390" fill="white"/>"#);
    svg.push('\n');
    panel(
        &mut svg,
        run,
        (60.0, 40.0),
        "output tokens/s (all streams)",
        |p| p.tokens_per_s,
    );
    panel(&mut svg, run, (520.0, 40.0), "TTFT p50 (ms)", |p| p.ttft_ms);
    for (i, (label, _)) in run.servers.iter().enumerate() {
        let x = 60.0 + 220.0 * i as f64;
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="360" x2="{}" y2="360" stroke="{colour}" stroke-width="3"/><text x="{}" y="364" font-size="12">{}</text>"#,
            x + 24.0,
            x + 30.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="480" y="384" font-size="10" text-anchor="middle" fill="#555">{}</text>"##,
        escape(caption)
    );
    svg.push_str("</svg>\n");
    svg
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = read(&args.raw)?;
    if run.servers.is_empty() {
        anyhow::bail!("no load-generator results in {:?}", args.raw);
    }
    print!("{}", table(&run, &args));
    if let Some(path) = &args.svg {
        let caption = std::env::var("AIAAS_REPORT_CAPTION").unwrap_or_default();
        std::fs::write(path, chart(&run, &caption)).with_context(|| format!("writing {path:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts_skip_missing_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn axis_tops_are_round_and_not_below_the_data() {
        assert_eq!(nice_ceiling(73.0), 100.0);
        assert_eq!(nice_ceiling(21.0), 25.0);
        assert_eq!(nice_ceiling(0.9), 1.0);
        assert_eq!(nice_ceiling(1900.0), 2000.0);
    }

    #[test]
    fn a_run_reads_levels_probes_and_sizes_and_takes_medians() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw.jsonl");
        let mut text = String::from("not json\n");
        for (rep, tps, itl) in [(1, 10.0, 4.0), (2, 30.0, 8.0), (3, 20.0, 5.0)] {
            for (label, factor) in [("aiaas", 1.0), ("aiaas-bare", 1.1), ("llama.cpp", 2.0)] {
                text.push_str(&format!(
                    r#"{{"label":"{label}","rep":{rep},"concurrency":1,"requests":2,"errors":0,"requests_per_s":0.1,"output_tokens_per_s":{},"ttft_p50_ms":{},"ttft_p99_ms":1,"itl_p50_ms":{itl},"itl_p99_ms":1,"latency_p50_ms":1,"mean_output_tokens":128,"mean_prompt_tokens":130}}"#,
                    tps * factor,
                    100.0 * factor
                ));
                text.push('\n');
            }
        }
        text.push_str(r#"{"threads":2,"read_gb_per_s":20.0,"tokens_per_s_ceiling":200.0}"#);
        text.push('\n');
        text.push_str(r#"{"rss":"aiaas","rss_kib":300000,"hwm_kib":400000}"#);
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        let run = read(&path).unwrap();
        assert_eq!(run.servers.len(), 3);
        let p = run.point("aiaas", 1).unwrap();
        assert_eq!((p.tokens_per_s, p.reps, p.requests), (20.0, 3, 6));
        assert_eq!(run.point("llama.cpp", 1).unwrap().tokens_per_s, 40.0);
        let args = Args::parse_from(["aiaas-report", "raw.jsonl", "--peers", "llama.cpp"]);
        let table = table(&run, &args);
        assert!(table.contains("| 1 | 20.0 / 100 / 5.0 |"), "{table}");
        assert!(table.contains("0.50"), "{table}");
        assert!(table.contains("10.0%: **not met**"), "{table}");
        // Decoding alone: 1000 / the median ITL (5 ms) against the 200 tokens/s ceiling.
        assert!(
            table.contains(
                "(1000 / ITL p50 = 200.0 tokens/s, prefill excluded): 100.0% of the ceiling: met"
            ),
            "{table}"
        );
        assert!(table.contains("peak 391 MiB: met"), "{table}");
        // The single-stream target names llama.cpp whatever else is compared.
        let more = Args::parse_from([
            "aiaas-report",
            "raw.jsonl",
            "--peers",
            "llama.cpp,aiaas-bare",
        ]);
        let wider = super::table(&run, &more);
        assert!(
            wider.contains("- single stream ≥ llama.cpp: 20.0 vs 40.0 tokens/s (0.50×)"),
            "{wider}"
        );
        assert!(
            table.contains("| aiaas | 130 / 128 (6 reqs, 3 reps) |"),
            "{table}"
        );
        let rows = rows(&run);
        assert!(rows.contains("| llama.cpp | 40.0, 200, 5.0 |"), "{rows}");
        let svg = chart(&run, "caption");
        assert_eq!(svg.matches("<polyline").count(), 6);
    }
}
