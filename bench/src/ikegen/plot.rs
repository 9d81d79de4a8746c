//! A small hand-written SVG of a run: handshake rate (and flood rate) and
//! latency over time, from the report's timeline buckets.

use std::fmt::Write as _;

use super::report::{Report, TimelineBucket};

const W: f64 = 900.0;
const PANEL_H: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 52.0;
const GAP: f64 = 60.0;

/// Merges 100 ms buckets into wider ones for long runs (≤ ~300 points).
fn rebucket(timeline: &[TimelineBucket]) -> (Vec<TimelineBucket>, f64) {
    let base = 0.1;
    let factor = if timeline.len() <= 300 {
        1
    } else {
        10 * timeline.len().div_ceil(3000)
    };
    let width = base * factor as f64;
    let mut out: Vec<TimelineBucket> = Vec::new();
    for chunk in timeline.chunks(factor) {
        let mut b = TimelineBucket {
            t: chunk[0].t,
            ..TimelineBucket::default()
        };
        for c in chunk {
            let total = b.established + c.established;
            if total > 0 {
                b.mean_latency_ms = (b.mean_latency_ms * b.established as f64
                    + c.mean_latency_ms * c.established as f64)
                    / total as f64;
            }
            b.established = total;
            b.failed += c.failed;
            b.max_latency_ms = b.max_latency_ms.max(c.max_latency_ms);
            b.flood_sent += c.flood_sent;
        }
        out.push(b);
    }
    (out, width)
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

struct Panel {
    top: f64,
    y_max: f64,
    t_max: f64,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * if self.t_max > 0.0 { t / self.t_max } else { 0.0 }
    }
    fn y(&self, v: f64) -> f64 {
        self.top + PANEL_H - PANEL_H * (v / self.y_max).clamp(0.0, 1.0)
    }
    fn frame(&self, o: &mut String, title: &str, unit: &str) {
        let _ = writeln!(
            o,
            r##"<rect x="{LEFT}" y="{}" width="{}" height="{PANEL_H}" fill="#fafafa" stroke="#999"/>"##,
            self.top,
            W - LEFT - RIGHT
        );
        let _ = writeln!(
            o,
            r##"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"##,
            self.top - 8.0,
            esc(title)
        );
        for i in 0..=4 {
            let v = self.y_max * i as f64 / 4.0;
            let y = self.y(v);
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
                W - RIGHT
            );
            let _ = writeln!(
                o,
                r##"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{} {unit}</text>"##,
                LEFT - 4.0,
                y + 4.0,
                fmt_num(v)
            );
        }
        for i in 0..=5 {
            let t = self.t_max * i as f64 / 5.0;
            let x = self.x(t);
            let _ = writeln!(
                o,
                r##"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{t:.1} s</text>"##,
                self.top + PANEL_H + 14.0
            );
        }
    }
    fn line(&self, o: &mut String, pts: &[(f64, f64)], color: &str, label: &str, slot: usize) {
        if pts.is_empty() {
            return;
        }
        let mut d = String::new();
        for (i, (t, v)) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                self.x(*t),
                self.y(*v)
            );
        }
        let _ = writeln!(
            o,
            r##"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>"##
        );
        let lx = W - RIGHT - 180.0;
        let ly = self.top + 16.0 + 16.0 * slot as f64;
        let _ = writeln!(
            o,
            r##"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"/>"##,
            lx + 20.0
        );
        let _ = writeln!(
            o,
            r##"<text x="{}" y="{}" font-size="12">{}</text>"##,
            lx + 26.0,
            ly + 4.0,
            esc(label)
        );
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The SVG document for `report`.
pub fn render_svg(report: &Report) -> String {
    let (buckets, width) = rebucket(&report.timeline);
    let t_max = (buckets.len() as f64 * width).max(width);
    let rate = |b: &TimelineBucket| b.established as f64 / width;
    let flood = |b: &TimelineBucket| b.flood_sent as f64 / width;
    let has_flood = buckets.iter().any(|b| b.flood_sent > 0);
    let rate_max = buckets
        .iter()
        .map(|b| rate(b).max(if has_flood { flood(b) } else { 0.0 }))
        .fold(0.0, f64::max);
    let lat_max = buckets.iter().map(|b| b.max_latency_ms).fold(0.0, f64::max);
    let h = TOP + 2.0 * PANEL_H + GAP + 40.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let title = format!(
        "ikegen → {}: {} of {} established, {:.0}/s, p99 {:.1} ms",
        report.remote, report.established, report.attempted, report.handshakes_per_sec, report.latency_ike_ms.p99
    );
    let _ = writeln!(o, r##"<text x="{LEFT}" y="18" font-size="15">{}</text>"##, esc(&title));
    let p1 = Panel {
        top: TOP,
        y_max: nice_max(rate_max),
        t_max,
    };
    p1.frame(&mut o, &format!("rate per second ({width:.1} s buckets)"), "/s");
    let pts: Vec<(f64, f64)> = buckets.iter().map(|b| (b.t + width / 2.0, rate(b))).collect();
    p1.line(&mut o, &pts, "#1f77b4", "IKE SAs established/s", 0);
    if has_flood {
        let pts: Vec<(f64, f64)> = buckets.iter().map(|b| (b.t + width / 2.0, flood(b))).collect();
        p1.line(&mut o, &pts, "#d62728", "flood IKE_SA_INIT/s", 1);
    }
    let p2 = Panel {
        top: TOP + PANEL_H + GAP,
        y_max: nice_max(lat_max),
        t_max,
    };
    p2.frame(&mut o, "latency initiate → IKE SA up", "ms");
    let with_data: Vec<&TimelineBucket> = buckets.iter().filter(|b| b.established > 0).collect();
    let mean: Vec<(f64, f64)> = with_data
        .iter()
        .map(|b| (b.t + width / 2.0, b.mean_latency_ms))
        .collect();
    let max: Vec<(f64, f64)> = with_data
        .iter()
        .map(|b| (b.t + width / 2.0, b.max_latency_ms))
        .collect();
    p2.line(&mut o, &mean, "#2ca02c", "mean", 0);
    p2.line(&mut o, &max, "#ff7f0e", "max", 1);
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_both_panels() {
        let mut r = Report::default();
        for i in 0..50 {
            r.timeline.push(TimelineBucket {
                t: i as f64 * 0.1,
                established: 10 + i,
                mean_latency_ms: 2.0,
                max_latency_ms: 5.0,
                ..Default::default()
            });
        }
        let svg = render_svg(&r);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 3);
        assert!(svg.contains("established/s"));
    }

    #[test]
    fn long_runs_are_rebucketed() {
        let tl: Vec<TimelineBucket> = (0..5000)
            .map(|i| TimelineBucket {
                t: i as f64 * 0.1,
                established: 1,
                ..Default::default()
            })
            .collect();
        let (b, w) = rebucket(&tl);
        assert!(b.len() <= 300, "{}", b.len());
        assert!((w - 2.0).abs() < 1e-9);
        assert_eq!(b.iter().map(|x| x.established).sum::<u64>(), 5000);
    }
}
