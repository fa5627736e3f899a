//! The report: `report.md`, a self-contained `report.html` (inline CSS and SVG), one SVG
//! sequence diagram per scene, and the terminal summary that mirrors the table.

use std::fmt::Write as _;
use std::path::Path;

use crate::proxy::{Dir, FrameLog};
use crate::{Evidence, Outcome};

/// Frame types worth drawing (the rest is connection housekeeping).
const DRAWN: [&str; 7] = [
    "Send",
    "SendMulti",
    "Accepted",
    "Deliver",
    "FetchBundle",
    "Bundle",
    "malformed",
];
/// At most this many arrows per diagram.
const MAX_ARROWS: usize = 48;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The terminal summary: one row per property, as in the report's table.
pub fn summary(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let w0 = outcomes
        .iter()
        .map(|o| o.title.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let w1 = outcomes
        .iter()
        .map(|o| o.headline.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "  {:<w0$}  {:<w1$}  {:>6}  {:>6}  result",
        "property", "attack", "checks", "time"
    );
    let _ = writeln!(out, "  {}", "─".repeat(w0 + w1 + 26));
    for o in outcomes {
        let ok = o.observed.iter().filter(|c| c.ok).count();
        let _ = writeln!(
            out,
            "  {:<w0$}  {:<w1$}  {:>6}  {:>5.1}s  {}",
            o.title,
            o.headline,
            format!("{ok}/{}", o.observed.len()),
            o.duration.as_secs_f64(),
            if o.pass { "PASS" } else { "FAIL" }
        );
        for c in o.observed.iter().filter(|c| !c.ok) {
            let _ = writeln!(out, "      ✗ {}", c.what);
        }
    }
    let passed = outcomes.iter().filter(|o| o.pass).count();
    let _ = writeln!(
        out,
        "  {passed}/{} properties hold{}",
        outcomes.len(),
        if passed == outcomes.len() {
            ""
        } else {
            " — SOME FAILED"
        }
    );
    out
}

fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(out, "{:04x}  {:<47}  {}", i * 16, hex.join(" "), ascii);
    }
    out
}

/// The SVG sequence diagram of one scene's message traffic.
pub fn sequence_svg(o: &Outcome) -> Option<String> {
    let drawn: Vec<&FrameLog> = o
        .log
        .iter()
        .filter(|f| DRAWN.contains(&f.kind) || f.tampered())
        .collect();
    // Too many to draw: keep every attack (up to the cap) and the earliest other frames, in
    // order, so a long scene still shows what the attacker did.
    let attacks = drawn
        .iter()
        .filter(|f| f.tampered())
        .count()
        .min(MAX_ARROWS);
    let mut others = MAX_ARROWS - attacks;
    let mut kept_attacks = 0;
    let arrows: Vec<&FrameLog> = drawn
        .into_iter()
        .filter(|f| {
            if f.tampered() && kept_attacks < attacks {
                kept_attacks += 1;
                true
            } else if !f.tampered() && others > 0 {
                others -= 1;
                true
            } else {
                false
            }
        })
        .collect();
    if arrows.is_empty() {
        return None;
    }
    // Lanes: clients in order of appearance, then the attacker and the relay in the middle.
    let mut clients: Vec<String> = Vec::new();
    for f in &arrows {
        let n = f.who.map(|k| o.name_of(&k)).unwrap_or_else(|| "?".into());
        if !clients.contains(&n) {
            clients.push(n);
        }
    }
    let left: Vec<String> = clients.iter().step_by(2).cloned().collect();
    let right: Vec<String> = clients.iter().skip(1).step_by(2).cloned().collect();
    let mut lanes: Vec<String> = left.clone();
    lanes.push("attacker".into());
    lanes.push("relay".into());
    lanes.extend(right.iter().cloned());
    let lane_w = 190.0;
    let width = lane_w * lanes.len() as f64;
    let row_h = 26.0;
    let top = 50.0;
    let height = top + row_h * (arrows.len() as f64 + 1.0);
    let x = |name: &str| -> f64 {
        let i = lanes.iter().position(|l| l == name).unwrap_or(0);
        lane_w * i as f64 + lane_w / 2.0
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="11"><defs><marker id="a" markerWidth="8" markerHeight="8" refX="7" refY="3" orient="auto"><path d="M0,0 L7,3 L0,6 z" fill="#333"/></marker><marker id="r" markerWidth="8" markerHeight="8" refX="7" refY="3" orient="auto"><path d="M0,0 L7,3 L0,6 z" fill="#c00"/></marker></defs><rect width="100%" height="100%" fill="white"/>"##
    );
    for l in &lanes {
        let lx = x(l);
        let fill = if l == "attacker" { "#fdd" } else { "#eef" };
        let _ = write!(
            s,
            r##"<rect x="{}" y="8" width="120" height="24" rx="4" fill="{fill}" stroke="#333"/><text x="{lx}" y="24" text-anchor="middle" font-weight="bold">{}</text><line x1="{lx}" y1="32" x2="{lx}" y2="{height}" stroke="#999" stroke-dasharray="4 3"/>"##,
            lx - 60.0,
            esc(l)
        );
    }
    for (i, f) in arrows.iter().enumerate() {
        let y = top + row_h * (i as f64 + 0.5);
        let client = f.who.map(|k| o.name_of(&k)).unwrap_or_else(|| "?".into());
        let (from, to) = match f.dir {
            Dir::ToRelay => (x(&client), x("relay")),
            Dir::ToClient => (x("relay"), x(&client)),
        };
        let bad = f.tampered();
        let color = if bad { "#c00" } else { "#333" };
        let marker = if bad { "r" } else { "a" };
        let mut label = f.kind.to_string();
        if let Some(p) = f.peer {
            let who = o.name_of(&p);
            label = match f.dir {
                Dir::ToRelay => format!("{label} → {who}"),
                Dir::ToClient => format!("{label} from {who}"),
            };
        }
        label = format!("{label} ({} B)", f.len);
        if bad {
            label = format!("{label} ⚡ {}", f.action);
        }
        let _ = write!(
            s,
            r##"<line x1="{from}" y1="{y}" x2="{to}" y2="{y}" stroke="{color}" stroke-width="{}" marker-end="url(#{marker})"/><text x="{}" y="{}" text-anchor="middle" fill="{color}">{}</text><text x="4" y="{}" fill="#888">{:>5} ms</text>"##,
            if bad { 2 } else { 1 },
            (from + to) / 2.0,
            y - 4.0,
            esc(&label.chars().take(90).collect::<String>()),
            y + 4.0,
            f.t_ms
        );
    }
    s.push_str("</svg>");
    Some(s)
}

/// Writes `report.md`, `report.html` and the `sequence-*.svg` files into `dir`.
pub fn write(dir: &Path, outcomes: &[Outcome]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let passed = outcomes.iter().filter(|o| o.pass).count();
    let mut md = String::new();
    let mut html = String::new();
    let _ = writeln!(md, "# sotto demo: security properties under attack\n");
    let _ = writeln!(
        md,
        "{passed} of {} properties hold. Everything ran in one process on loopback: a relay, throwaway profiles, and an attacker proxy between the clients and the relay that records every byte (pcap files below), and drops, delays, replays, modifies and injects frames. Generated by `sotto demo`.\n",
        outcomes.len()
    );
    let _ = writeln!(md, "| property | attack | expected | observed | result |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sotto demo report</title><style>
body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;width:100%;margin:1em 0}}td,th{{border:1px solid #ccc;padding:6px;vertical-align:top;text-align:left}}
th{{background:#f4f4f4}}.pass{{background:#dfd;font-weight:bold}}.fail{{background:#fdd;font-weight:bold}}
pre{{background:#f8f8f8;padding:8px;overflow-x:auto;font-size:12px}}.ok{{color:#070}}.bad{{color:#c00}}
.svg{{overflow-x:auto;border:1px solid #ddd;margin:1em 0}}</style></head><body>
<h1>sotto demo: security properties under attack</h1>
<p><b>{passed} of {} properties hold.</b> Everything ran in one process on loopback: a relay, throwaway profiles, and an attacker proxy between the clients and the relay that records every byte (pcap files below) and drops, delays, replays, modifies and injects frames. Generated by <code>sotto demo</code>.</p>
<table><tr><th>#</th><th>property</th><th>attack</th><th>expected</th><th>observed</th><th>result</th></tr>
"#,
        outcomes.len()
    );
    for (i, o) in outcomes.iter().enumerate() {
        let observed: Vec<String> = o
            .observed
            .iter()
            .map(|c| format!("{} {}", if c.ok { "✓" } else { "✗" }, c.what))
            .collect();
        let _ = writeln!(
            md,
            "| [{}](#{}) | {} | {} | {} | **{}** |",
            o.title,
            o.id,
            md_cell(&o.attack),
            md_cell(&o.expected),
            md_cell(&observed.join("<br>")),
            if o.pass { "PASS" } else { "FAIL" }
        );
        let obs_html: Vec<String> = o
            .observed
            .iter()
            .map(|c| {
                format!(
                    "<span class=\"{}\">{}</span> {}",
                    if c.ok { "ok" } else { "bad" },
                    if c.ok { "✓" } else { "✗" },
                    esc(&c.what)
                )
            })
            .collect();
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            i + 1,
            o.id,
            esc(o.title),
            esc(&o.attack),
            esc(&o.expected),
            obs_html.join("<br>"),
            if o.pass { "pass" } else { "fail" },
            if o.pass { "PASS" } else { "FAIL" }
        );
    }
    html.push_str("</table>\n");
    for (i, o) in outcomes.iter().enumerate() {
        let _ = writeln!(
            md,
            "\n<a id=\"{}\"></a>\n\n## {}. {}\n",
            o.id,
            i + 1,
            o.title
        );
        let _ = writeln!(
            md,
            "**Attack.** {}\n\n**Expected.** {}\n",
            o.attack, o.expected
        );
        let _ = writeln!(md, "**Observed** ({:.1} s):\n", o.duration.as_secs_f64());
        let _ = writeln!(
            html,
            "<h2 id=\"{}\">{}. {} — <span class=\"{}\">{}</span></h2><p><b>Attack.</b> {}</p><p><b>Expected.</b> {}</p><p><b>Observed</b> ({:.1} s):</p><ul>",
            o.id,
            i + 1,
            esc(o.title),
            if o.pass { "ok" } else { "bad" },
            if o.pass { "PASS" } else { "FAIL" },
            esc(&o.attack),
            esc(&o.expected),
            o.duration.as_secs_f64()
        );
        for c in &o.observed {
            let _ = writeln!(md, "- {} {}", if c.ok { "✓" } else { "✗" }, c.what);
            let _ = writeln!(
                html,
                "<li class=\"{}\">{} {}</li>",
                if c.ok { "ok" } else { "bad" },
                if c.ok { "✓" } else { "✗" },
                esc(&c.what)
            );
        }
        html.push_str("</ul>\n");
        md.push('\n');
        if let Some(p) = &o.pcap {
            let p = p.display().to_string();
            let _ = writeln!(md, "Capture: [{p}]({p})\n");
            let _ = writeln!(
                html,
                "<p>Capture: <a href=\"{}\">{}</a> (open with Wireshark or <code>tshark -r</code>)</p>",
                esc(&p),
                esc(&p)
            );
        }
        for e in &o.evidence {
            match e {
                Evidence::Text(t) => {
                    let _ = writeln!(md, "{t}\n");
                    let _ = writeln!(html, "<p>{}</p>", esc(t));
                }
                Evidence::Hex { caption, bytes } => {
                    let _ = writeln!(md, "{caption}:\n\n```\n{}```\n", hexdump(bytes));
                    let _ = writeln!(
                        html,
                        "<p>{}:</p><pre>{}</pre>",
                        esc(caption),
                        esc(&hexdump(bytes))
                    );
                }
                Evidence::Table {
                    caption,
                    header,
                    rows,
                } => {
                    let _ = writeln!(md, "{caption}:\n");
                    let _ = writeln!(md, "| {} |", header.join(" | "));
                    let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
                    for r in rows {
                        let cells: Vec<String> = r.iter().map(|c| md_cell(c)).collect();
                        let _ = writeln!(md, "| {} |", cells.join(" | "));
                    }
                    md.push('\n');
                    let _ = write!(html, "<p>{}:</p><table><tr>", esc(caption));
                    for h in header {
                        let _ = write!(html, "<th>{}</th>", esc(h));
                    }
                    html.push_str("</tr>");
                    for r in rows {
                        html.push_str("<tr>");
                        for c in r {
                            let _ = write!(html, "<td>{}</td>", esc(c));
                        }
                        html.push_str("</tr>");
                    }
                    html.push_str("</table>\n");
                }
            }
        }
        if let Some(svg) = sequence_svg(o) {
            let file = format!("sequence-{}.svg", o.id);
            std::fs::write(dir.join(&file), &svg)?;
            let _ = writeln!(
                md,
                "Sequence diagram of the message traffic (red: the attacker's doing):\n\n![sequence diagram]({file})\n"
            );
            let _ = writeln!(
                html,
                "<p>Sequence diagram of the message traffic (red: the attacker's doing):</p><div class=\"svg\">{svg}</div>"
            );
        }
    }
    html.push_str("</body></html>\n");
    std::fs::write(dir.join("report.md"), md)?;
    std::fs::write(dir.join("report.html"), html)?;
    Ok(())
}
