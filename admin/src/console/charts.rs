//! Charts rendered on the server as inline SVG (no script): a column chart of a time series and
//! horizontal bars for a breakdown. Every text is escaped here, since the markup is inserted
//! into pages as is; each column carries a `<title>` so hovering shows its exact value.

use std::fmt::Write as _;

/// Escape text for SVG / HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round axis maximum at or above `max` (1, 2, 5 × 10ⁿ).
fn nice_max(max: i64) -> i64 {
    if max <= 0 {
        return 1;
    }
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m) >= max {
                return step.saturating_mul(m);
            }
        }
        step = step.saturating_mul(10);
    }
}

/// How many grid intervals divide a `nice_max` evenly into whole numbers (at most 5).
fn grid_steps(max: i64) -> i64 {
    [4, 5, 2].into_iter().find(|d| max % d == 0).unwrap_or(1)
}

/// One column: its axis label (may be empty), the tooltip, and the value.
pub struct Column {
    pub label: String,
    pub tooltip: String,
    pub value: i64,
}

/// A column chart, `aria-label`led by `title`; `axis` formats the y-axis maximum.
pub fn columns(title: &str, cols: &[Column], axis: impl Fn(i64) -> String) -> String {
    let (w, h, left, bottom, top) = (1000.0f64, 240.0f64, 64.0f64, 24.0f64, 10.0f64);
    let max = nice_max(cols.iter().map(|c| c.value).max().unwrap_or(0));
    let steps = grid_steps(max);
    let plot_w = w - left - 8.0;
    let plot_h = h - bottom - top;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(title)
    );
    for i in 0..=steps {
        let y = top + plot_h * i as f64 / steps as f64;
        let value = max - max * i / steps;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}"/><text class="axis" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            w - 8.0,
            left - 6.0,
            y + 4.0,
            escape(&axis(value))
        );
    }
    let n = cols.len().max(1) as f64;
    let slot = plot_w / n;
    let bar = (slot * 0.7).max(1.0);
    let every = (cols.len() / 8).max(1);
    for (i, col) in cols.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let bh = if max > 0 {
            plot_h * col.value.max(0) as f64 / max as f64
        } else {
            0.0
        };
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{bh:.1}"><title>{}</title></rect>"#,
            top + plot_h - bh,
            escape(&col.tooltip)
        );
        if i % every == 0 && !col.label.is_empty() {
            let _ = write!(
                svg,
                r#"<text class="axis" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x + bar / 2.0,
                h - 6.0,
                escape(&col.label)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars of a breakdown: label, bar, formatted value.
pub fn bars(title: &str, rows: &[(String, i64, String)]) -> String {
    let row_h = 26.0f64;
    let (w, label_w, value_w) = (1000.0f64, 240.0f64, 140.0f64);
    let h = (rows.len().max(1) as f64) * row_h + 4.0;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart bars" viewBox="0 0 {w} {h}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(title)
    );
    for (i, (label, value, shown)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 2.0;
        let bw = (w - label_w - value_w) * (*value).max(0) as f64 / max as f64;
        let short: String = label.chars().take(28).collect();
        let _ = write!(
            svg,
            r#"<text class="label" x="0" y="{:.1}">{}</text><rect class="bar" x="{label_w}" y="{:.1}" width="{bw:.1}" height="{:.1}"><title>{}: {}</title></rect><text class="value" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            y + 17.0,
            escape(&short),
            y + 4.0,
            row_h - 8.0,
            escape(label),
            escape(shown),
            w,
            y + 17.0,
            escape(shown)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(101), 200);
        assert_eq!(nice_max(4_999), 5_000);
    }

    #[test]
    fn grid_lines_fall_on_distinct_whole_numbers() {
        for max in [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000_000] {
            let steps = grid_steps(nice_max(max));
            let ticks: Vec<i64> = (0..=steps).map(|i| max - max * i / steps).collect();
            assert!(ticks.windows(2).all(|t| t[0] > t[1]), "{max}: {ticks:?}");
            assert!(
                ticks.iter().all(|t| (t * steps) % max == 0),
                "{max}: {ticks:?}"
            );
        }
        let svg = columns(
            "t",
            &[Column {
                label: String::new(),
                tooltip: String::new(),
                value: 1,
            }],
            |v| v.to_string(),
        );
        assert_eq!(svg.matches(r#"class="grid""#).count(), 2);
    }

    #[test]
    fn chart_text_is_escaped() {
        let svg = columns(
            "<t>",
            &[Column {
                label: "<script>".into(),
                tooltip: "\"x\"".into(),
                value: 3,
            }],
            |v| v.to_string(),
        );
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;") && svg.contains("&quot;x&quot;"));
        let svg = bars("t", &[("<b>".into(), 1, "1".into())]);
        assert!(!svg.contains("<b>") && svg.contains("&lt;b&gt;"));
    }
}
