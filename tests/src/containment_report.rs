//! The containment lab's report: a terminal table and a self-contained
//! HTML page (no scripts, no external resources) a person can read at a
//! glance.

use std::fmt::Write as _;

use super::containment::{Outcome, Report};

fn mark(o: &Outcome) -> &'static str {
    if o.as_expected() { "✔" } else { "✘" }
}

fn counter(o: &Outcome) -> String {
    o.counter.as_ref().map_or_else(|| "-".into(), |(s, n)| format!("{s} +{n}"))
}

/// The report as terminal text.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    for mode in ["monitor", "enforce"] {
        let _ = writeln!(out, "\n  {} mode", mode.to_uppercase());
        let _ = writeln!(out, "  {:<24} {:<52} {:<10} {:<13} closed by", "card", "attack", "result", "verdict");
        for o in r.outcomes.iter().filter(|o| o.mode == mode) {
            let card = o.card.owasp.map_or("legit", |x| x.split(' ').next().unwrap_or(x));
            let _ = writeln!(
                out,
                "{} {:<24} {:<52} {:<10} {:<13} {}",
                mark(o),
                format!("{card} {}", o.card.id),
                o.card.title,
                if o.delivered { "delivered" } else { "blocked" },
                o.verdict,
                o.card.rule
            );
            let _ = writeln!(out, "    {:<22} {}", "traffic", o.traffic);
            let _ = writeln!(out, "    {:<22} {}", "counter", counter(o));
            if let Some(rec) = &o.record {
                let _ = writeln!(out, "    {:<22} {rec}", "flow log");
            }
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The report as one HTML page.
pub fn html(r: &Report) -> String {
    let passed = r.outcomes.iter().filter(|o| o.as_expected()).count();
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>egress containment lab</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#1d2330}}
h1{{font-size:1.6em;margin-bottom:.2em}} .sub{{color:#5a6375}}
table{{border-collapse:collapse;width:100%;margin:1em 0 2em}} th,td{{border-bottom:1px solid #e3e6ec;padding:.5em .6em;vertical-align:top;text-align:left}}
th{{background:#f4f6f9;font-weight:600}} code,pre{{font:12px/1.4 ui-monospace,monospace}} pre{{white-space:pre-wrap;margin:.3em 0 0;color:#44506a}}
.v{{display:inline-block;padding:.1em .55em;border-radius:1em;font-weight:600;font-size:12px}}
.allowed{{background:#dff5e3;color:#146c2e}} .would_deny,.would_refuse{{background:#fff1d6;color:#8a5300}} .denied,.refused{{background:#fde2e1;color:#a3221b}}
.ok{{color:#146c2e;font-weight:700}} .bad{{color:#a3221b;font-weight:700}} .owasp{{color:#5a6375;font-size:12px}}
</style></head><body>
<h1>egress containment lab</h1>
<p class="sub">An AI agent runtime behind the egress gateway, attacked as a prompt-injected agent would, with the AgentCore reference pack <code>{}</code>: first in <b>monitor</b> mode (nothing blocked, every deny reported as <i>would_deny</i>), then promoted to <b>enforce</b>. <b>{passed} of {} card runs</b> behaved as expected, in {:.1} s.</p>
"#,
        esc(&r.policy),
        r.outcomes.len(),
        r.seconds
    );
    for mode in ["monitor", "enforce"] {
        let _ = write!(
            h,
            "<h2>{} mode</h2><table><tr><th></th><th>card</th><th>attack</th><th>result</th><th>verdict</th><th>closed by</th><th>evidence</th></tr>",
            if mode == "monitor" { "Monitor" } else { "Enforce" }
        );
        for o in r.outcomes.iter().filter(|o| o.mode == mode) {
            let owasp = o.card.owasp.unwrap_or("legitimate traffic");
            let record = o.record.as_ref().map(|r| format!("<pre>{}</pre>", esc(&r.to_string()))).unwrap_or_default();
            let _ = write!(
                h,
                "<tr><td class=\"{}\">{}</td><td><b>{}</b><br><span class=\"owasp\">{}</span></td><td>{}<pre>{}</pre></td><td>{}</td><td><span class=\"v {}\">{}</span></td><td><code>{}</code></td><td><code>{}</code>{}</td></tr>",
                if o.as_expected() { "ok" } else { "bad" },
                mark(o),
                esc(o.card.title),
                esc(owasp),
                esc(o.card.attack),
                esc(&o.traffic),
                if o.delivered { "delivered" } else { "blocked" },
                esc(&o.verdict),
                esc(&o.verdict),
                esc(o.card.rule),
                esc(&counter(o)),
                record
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}
