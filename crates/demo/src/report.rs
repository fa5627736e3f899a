//! The report: `report.md`, a self-contained `report.html` (inline CSS and SVG), one SVG
//! sequence diagram per scene, the Wireshark dissector `sotto.lua` and a `SHA256SUMS` file, and
//! the terminal summary that mirrors the table.
//!
//! Everything here is generic over [`Outcome`]s: a new scene gets its section, diagram, capture
//! figures, hash and tshark commands without code of its own here.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::proxy::{Dir, FrameLog};
use crate::{Evidence, Outcome};

/// The Wireshark/tshark dissector for sotto frames, written beside the report.
pub const DISSECTOR: &str = include_str!("../../../tools/wireshark/sotto.lua");
/// Its file name in the report directory.
pub const DISSECTOR_FILE: &str = "sotto.lua";
/// The tshark options that decode a report's pcap files: the dissector, and the HTTP heuristic
/// that finds the WebSocket upgrade on the demo's arbitrary ports.
pub const TSHARK_OPTS: &str = "-X lua_script:sotto.lua --enable-heuristic http_tcp";

/// Frame types worth drawing (the rest is connection housekeeping).
const DRAWN: [&str; 8] = [
    "Send",
    "SendMulti",
    "Accepted",
    "Deliver",
    "FetchBundle",
    "Bundle",
    "Error",
    "malformed",
];
/// At most this many rows per diagram (the attacker's actions and the scene's events are always
/// drawn; ordinary frames nearest to them fill the rest).
const MAX_ROWS: usize = 56;

/// Where and when a report was made: enough to find the code that made it and check its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// The sotto version (the workspace version).
    pub version: String,
    /// The git commit the binary was built from (40 hex digits), or `unknown`.
    pub commit: String,
    /// Whether the tracked files differed from that commit when the binary was built (`None`:
    /// unknown).
    pub dirty: Option<bool>,
    /// When the report was generated (RFC 3339, UTC).
    pub generated: String,
}

impl Provenance {
    /// This build's version and commit (embedded at build time by `build.rs`), and now.
    pub fn current() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: env!("SOTTO_GIT_COMMIT").to_owned(),
            dirty: match env!("SOTTO_GIT_DIRTY") {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            generated: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    /// One line: `sotto 0.1.0, commit 1a2b… (clean), generated 2026-12-04T20:29:51Z`.
    pub fn line(&self) -> String {
        let state = match self.dirty {
            Some(false) => " (clean checkout)",
            Some(true) => " (with uncommitted changes: this commit alone does not reproduce it)",
            None => "",
        };
        format!(
            "sotto {}, commit {}{state}, generated {}",
            self.version, self.commit, self.generated
        )
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Escapes `s` for HTML and shows `backticked` spans as code, as Markdown would.
fn esc_code(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
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
        let _ = writeln!(
            out,
            "  {:<w0$}  {:<w1$}  {:>6}  {:>5.1}s  {}",
            o.title,
            o.headline,
            checks(o),
            o.duration.as_secs_f64(),
            verdict(o)
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

fn checks(o: &Outcome) -> String {
    let ok = o.observed.iter().filter(|c| c.ok).count();
    format!("{ok}/{}", o.observed.len())
}

fn verdict(o: &Outcome) -> &'static str {
    if o.pass { "PASS" } else { "FAIL" }
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

/// Font size of the diagrams' text, in px.
const FONT_PX: f64 = 11.0;
/// The font the diagrams ask for: monospace, so that text width is predictable.
const FONT: &str = "DejaVu Sans Mono, Menlo, Consolas, Liberation Mono, monospace";

/// Width of `s` in the diagrams' monospace font, with a margin: every common monospace font
/// advances 0.6 em per character; East Asian and emoji characters take two cells.
pub fn text_width(s: &str) -> f64 {
    let cells: usize = s
        .chars()
        .map(|c| if u32::from(c) >= 0x2E80 { 2 } else { 1 })
        .sum();
    cells as f64 * FONT_PX * 0.62
}

/// Splits `s` into lines of at most `max` characters at spaces (a longer word gets its own line).
fn wrap(s: &str, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > max {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// One row of a sequence diagram.
enum Row<'a> {
    /// A frame: an arrow between a client's lane and the relay's.
    Frame(&'a FrameLog),
    /// An event of the scene: a band across every lane.
    Event(&'a FrameLog),
    /// Frames left out to keep the diagram short.
    Gap(usize),
}

/// Chooses the rows: every event and every frame the attacker touched, then the ordinary frames
/// nearest to them, at most [`MAX_ROWS`] in all, in order, with gaps marked.
fn rows(o: &Outcome) -> Vec<Row<'_>> {
    let eligible: Vec<&FrameLog> = o
        .log
        .iter()
        .filter(|f| f.is_event() || f.tampered() || DRAWN.contains(&f.kind))
        .collect();
    let key = |f: &FrameLog| f.is_event() || f.tampered();
    let keys: Vec<usize> = (0..eligible.len()).filter(|&i| key(eligible[i])).collect();
    let mut keep = vec![false; eligible.len()];
    for &i in keys.iter().take(MAX_ROWS) {
        keep[i] = true;
    }
    let mut budget = MAX_ROWS.saturating_sub(keys.len().min(MAX_ROWS));
    // Ordinary frames by distance to the nearest key row (the earliest first if none).
    let mut others: Vec<(usize, usize)> = (0..eligible.len())
        .filter(|&i| !key(eligible[i]))
        .map(|i| {
            let d = keys.iter().map(|&k| k.abs_diff(i)).min().unwrap_or(i);
            (d, i)
        })
        .collect();
    others.sort();
    for (_, i) in others {
        if budget == 0 {
            break;
        }
        keep[i] = true;
        budget -= 1;
    }
    let mut out = Vec::new();
    let mut skipped = 0;
    for (i, f) in eligible.iter().enumerate() {
        if !keep[i] {
            skipped += 1;
            continue;
        }
        if skipped > 0 {
            out.push(Row::Gap(skipped));
            skipped = 0;
        }
        out.push(if f.is_event() {
            Row::Event(f)
        } else {
            Row::Frame(f)
        });
    }
    if skipped > 0 {
        out.push(Row::Gap(skipped));
    }
    out
}

/// The label on a frame's arrow: type, peer and sizes. For a message frame (`Send`, `SendMulti`,
/// `Deliver`) the ciphertext body (the size the relay's-eye table shows) and the whole frame.
fn arrow_label(o: &Outcome, f: &FrameLog) -> String {
    let mut label = f.kind.to_owned();
    if let Some(p) = f.peer {
        let who = o.name_of(&p);
        label = match f.dir {
            Dir::ToRelay => format!("{label} → {who}"),
            Dir::ToClient => format!("{label} from {who}"),
        };
    } else if !f.recipients.is_empty() {
        label = format!(
            "{label} → {}",
            crate::count(f.recipients.len(), "member", "members")
        );
    }
    match &f.body {
        Some(b) => format!("{label} · body {} B · frame {} B", b.len(), f.len),
        None => format!("{label} · {} B", f.len),
    }
}

/// The attacker's note for a frame, shortened: a frame it made up is "injected", not "modified",
/// and a note repeated for each of several frames (`a; a; a`) is said once with a count.
fn tidy_action(action: &str) -> String {
    let action = action
        .strip_prefix("modified: ")
        .filter(|rest| rest.starts_with("injected: "))
        .unwrap_or(action);
    let (head, parts) = match action.split_once(": ") {
        Some((h, rest)) => (Some(h), rest),
        None => (None, action),
    };
    let mut out: Vec<(String, usize)> = Vec::new();
    for p in parts.split("; ") {
        match out.last_mut() {
            Some((last, n)) if last == p => *n += 1,
            _ => out.push((p.to_owned(), 1)),
        }
    }
    let body = out
        .iter()
        .map(|(p, n)| {
            if *n > 1 {
                format!("{p} (×{n})")
            } else {
                p.clone()
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    match head {
        Some(h) => format!("{h}: {body}"),
        None => body,
    }
}

/// The text of an event row: `bob: the attacker cuts the connection`.
fn event_label(o: &Outcome, f: &FrameLog) -> String {
    match f.who {
        Some(k) => format!("{}: {}", o.name_of(&k), f.action),
        None => f.action.clone(),
    }
}

/// The SVG sequence diagram of one scene's message traffic and events. Every text is measured
/// ([`text_width`]) and the diagram sized to hold it: lanes are as wide as their widest arrow
/// label, and the attacker's notes and the events sit in a column on the right, wrapped.
pub fn sequence_svg(o: &Outcome) -> Option<String> {
    let rows = rows(o);
    if rows.is_empty() {
        return None;
    }
    let client_of = |f: &FrameLog| f.who.map(|k| o.name_of(&k)).unwrap_or_else(|| "?".into());
    // Lanes: clients in order of appearance, half left of the attacker and the relay, half right.
    let mut clients: Vec<String> = Vec::new();
    for r in &rows {
        if let Row::Frame(f) | Row::Event(f) = r
            && (!f.is_event() || f.who.is_some())
        {
            let n = client_of(f);
            if !clients.contains(&n) {
                clients.push(n);
            }
        }
    }
    let mut lanes: Vec<String> = clients.iter().step_by(2).cloned().collect();
    lanes.push("attacker".into());
    lanes.push("relay".into());
    lanes.extend(clients.iter().skip(1).step_by(2).cloned());
    let lane_index = |name: &str| lanes.iter().position(|l| l == name).unwrap_or(0);
    let relay = lane_index("relay");

    // Measure. Lane centres are placed so that every arrow's label fits between its two lanes
    // and neighbouring lane names do not touch: the gaps start at a minimum and the shortest
    // spans are widened first, spreading what is missing over the gaps they cross.
    let boxes: Vec<f64> = lanes.iter().map(|l| text_width(l) + 24.0).collect();
    let mut gaps: Vec<f64> = (1..lanes.len())
        .map(|i| 110.0_f64.max((boxes[i - 1] + boxes[i]) / 2.0 + 16.0))
        .collect();
    let mut spans: Vec<(usize, usize, f64)> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Frame(f) => {
                let c = lane_index(&client_of(f));
                Some((
                    c.min(relay),
                    c.max(relay),
                    text_width(&arrow_label(o, f)) + 24.0,
                ))
            }
            _ => None,
        })
        .filter(|(a, b, _)| a < b)
        .collect();
    spans.sort_by_key(|(a, b, _)| b - a);
    for (a, b, need) in spans {
        let have: f64 = gaps[a..b].iter().sum();
        if have < need {
            let add = (need - have) / (b - a) as f64;
            for g in &mut gaps[a..b] {
                *g += add;
            }
        }
    }
    // Columns: time, then what the attacker did and the events (left-aligned, wrapped, so a
    // reader sees them next to the times even when the lanes need scrolling), then the lanes.
    const NOTE_CHARS: usize = 46;
    const NOTES_HEAD: &str = "what the attacker did, events";
    let notes: Vec<Vec<String>> = rows
        .iter()
        .map(|r| match r {
            Row::Frame(f) if f.tampered() => wrap(&tidy_action(&f.action), NOTE_CHARS),
            Row::Event(f) => wrap(&event_label(o, f), NOTE_CHARS),
            _ => Vec::new(),
        })
        .collect();
    let notes_w = notes
        .iter()
        .flatten()
        .map(|l| text_width(l))
        .fold(0.0, f64::max);
    let notes_w = if notes_w > 0.0 {
        notes_w.max(text_width(NOTES_HEAD))
    } else {
        0.0
    };
    let time_w = 64.0;
    let notes_x = time_w + 4.0;
    let lanes_start = if notes_w > 0.0 {
        (notes_x + notes_w + 16.0).ceil()
    } else {
        time_w
    };
    let mut lane_x = vec![(lanes_start + boxes[0] / 2.0 + 8.0).ceil()];
    for g in &gaps {
        let last = lane_x[lane_x.len() - 1];
        lane_x.push((last + g).ceil());
    }
    let lanes_end = (lane_x[lane_x.len() - 1] + boxes[boxes.len() - 1] / 2.0 + 8.0).ceil();
    let width = lanes_end;
    let line_h = 14.0;
    let row_h = |i: usize| 26.0_f64.max(notes[i].len() as f64 * line_h + 10.0);
    let top = 44.0;
    let height = (top + (0..rows.len()).map(row_h).sum::<f64>() + 12.0).ceil();
    let x = |i: usize| lane_x[i];
    let (ma, mr) = (format!("a-{}", o.id), format!("r-{}", o.id));

    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="{FONT_PX}"><title>Sequence diagram: {}</title><defs><marker id="{ma}" markerWidth="8" markerHeight="8" refX="7" refY="3" orient="auto"><path d="M0,0 L7,3 L0,6 z" fill="#333"/></marker><marker id="{mr}" markerWidth="8" markerHeight="8" refX="7" refY="3" orient="auto"><path d="M0,0 L7,3 L0,6 z" fill="#c00"/></marker></defs><rect width="100%" height="100%" fill="white"/>"##,
        esc(o.title)
    );
    if notes_w > 0.0 {
        let _ = write!(
            s,
            r##"<text x="{notes_x}" y="24" font-weight="bold" fill="#555">{NOTES_HEAD}</text>"##
        );
    }
    for (i, l) in lanes.iter().enumerate() {
        let lx = x(i);
        let bw = boxes[i];
        let fill = if l == "attacker" { "#fdd" } else { "#eef" };
        let _ = write!(
            s,
            r##"<rect x="{}" y="8" width="{bw}" height="24" rx="4" fill="{fill}" stroke="#333"/><text x="{lx}" y="24" text-anchor="middle" font-weight="bold">{}</text><line x1="{lx}" y1="32" x2="{lx}" y2="{height}" stroke="#999" stroke-dasharray="4 3"/>"##,
            lx - bw / 2.0,
            esc(l)
        );
    }
    let mut y0 = top;
    for (i, r) in rows.iter().enumerate() {
        let h = row_h(i);
        let y = y0 + 16.0;
        match r {
            Row::Frame(f) => {
                let c = lane_index(&client_of(f));
                let (from, to) = match f.dir {
                    Dir::ToRelay => (x(c), x(relay)),
                    Dir::ToClient => (x(relay), x(c)),
                };
                let bad = f.tampered();
                let (color, marker, stroke) = if bad {
                    ("#c00", &mr, 2)
                } else {
                    ("#333", &ma, 1)
                };
                let _ = write!(
                    s,
                    r##"<line x1="{from}" y1="{y}" x2="{to}" y2="{y}" stroke="{color}" stroke-width="{stroke}" marker-end="url(#{marker})"/><text x="{}" y="{}" text-anchor="middle" fill="{color}">{}</text><text x="4" y="{}" fill="#888">{:>5} ms</text>"##,
                    (from + to) / 2.0,
                    y - 4.0,
                    esc(&arrow_label(o, f)),
                    y + 4.0,
                    f.t_ms
                );
            }
            Row::Event(f) => {
                let (x1, x2) = (time_w, lanes_end - 4.0);
                let _ = write!(
                    s,
                    r##"<rect x="{x1}" y="{}" width="{}" height="{}" fill="#fff3e0"/><line x1="{lanes_start}" y1="{y}" x2="{x2}" y2="{y}" stroke="#e65100" stroke-width="3" stroke-dasharray="10 5"/><text x="4" y="{}" fill="#888">{:>5} ms</text>"##,
                    y0 + 2.0,
                    x2 - x1,
                    h - 4.0,
                    y + 4.0,
                    f.t_ms
                );
                if let Some(k) = f.who {
                    let cx = x(lane_index(&o.name_of(&k)));
                    let _ = write!(
                        s,
                        r##"<circle cx="{cx}" cy="{y}" r="7" fill="#e65100"/><path d="M{} {} L{} {} M{} {} L{} {}" stroke="white" stroke-width="2"/>"##,
                        cx - 3.5,
                        y - 3.5,
                        cx + 3.5,
                        y + 3.5,
                        cx - 3.5,
                        y + 3.5,
                        cx + 3.5,
                        y - 3.5
                    );
                }
            }
            Row::Gap(n) => {
                let _ = write!(
                    s,
                    r##"<text x="{}" y="{}" text-anchor="middle" fill="#888" font-style="italic">… {} not drawn …</text>"##,
                    (lanes_start + lanes_end) / 2.0,
                    y + 4.0,
                    crate::count(*n, "frame", "frames")
                );
            }
        }
        let (color, weight) = match r {
            Row::Event(_) => ("#e65100", "bold"),
            _ => ("#c00", "normal"),
        };
        for (j, line) in notes[i].iter().enumerate() {
            let _ = write!(
                s,
                r##"<text x="{notes_x}" y="{}" fill="{color}" font-weight="{weight}">{}</text>"##,
                y + 4.0 + line_h * j as f64,
                esc(line)
            );
        }
        y0 += h;
    }
    s.push_str("</svg>");
    Some(s)
}

/// The width of a diagram's box in the HTML report, in CSS px (the body's `max-width`, less the
/// box's border).
const COLUMN_PX: f64 = 1098.0;

/// The `width` of an SVG written by [`sequence_svg`].
fn svg_px_width(svg: &str) -> f64 {
    svg.split(" width=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::MAX)
}

/// What the diagrams show, for the text beside them.
const LEGEND: &str = "Black: frames forwarded unchanged. Red: frames the attacker changed, dropped, delayed, replayed or injected (what it did is written beside the time). Orange bands: the scene's events (a connection cut, the relay killed or restarted, a profile stolen). Times: ms since the scene started. Sizes: on Send, SendMulti and Deliver, \"body\" is the ciphertext (the padded size the relay's-eye table shows) and \"frame\" the whole sotto frame around it, the WebSocket payload in the pcap (a Send adds 54 B to the body, a Deliver 70 B, a SendMulti 26 B + 32 B per recipient); on other frames, the whole sotto frame.";

/// A file of the report with what it is, for the files table and `SHA256SUMS`.
struct Listed {
    name: String,
    what: String,
    packets: Option<usize>,
    payload: Option<u64>,
    size: u64,
    sha256: String,
}

/// The commands that check one capture, as a shell snippet.
fn pcap_commands(name: &str) -> String {
    format!(
        "capinfos -c {name}                      # packets\n\
         tshark -r {name} -T fields -e tcp.len | awk '{{s += $1}} END {{print s}}'   # TCP payload bytes\n\
         tshark {TSHARK_OPTS} -r {name} -Y sotto        # every sotto frame, decoded\n\
         tshark {TSHARK_OPTS} -r {name} -Y sotto -T fields \\\n    -e frame.number -e sotto.type_name -e sotto.delivery_id -e sotto.message_id -e sotto.body_len -e sotto.error.name\n"
    )
}

/// Writes the report into `dir` with this build's [`Provenance`].
pub fn write(dir: &Path, outcomes: &[Outcome]) -> std::io::Result<()> {
    write_with(dir, outcomes, &Provenance::current())
}

/// Writes `report.md`, `report.html`, the `sequence-*.svg` files, `sotto.lua` and `SHA256SUMS`
/// into `dir` (the scenes have written their pcap files there already).
#[allow(clippy::too_many_lines)]
pub fn write_with(dir: &Path, outcomes: &[Outcome], prov: &Provenance) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let passed = outcomes.iter().filter(|o| o.pass).count();
    let total_s: f64 = outcomes.iter().map(|o| o.duration.as_secs_f64()).sum();

    // The files beside the report, hashed as written.
    let mut files: Vec<Listed> = Vec::new();
    for o in outcomes {
        if let Some(p) = &o.pcap {
            files.push(Listed {
                name: p.name.display().to_string(),
                what: format!("capture of scene \"{}\"", o.title),
                packets: Some(p.summary.packets),
                payload: Some(p.summary.payload_bytes),
                size: p.summary.file_bytes,
                sha256: p.summary.sha256_hex(),
            });
        }
    }
    let mut svgs = Vec::new();
    for o in outcomes {
        if let Some(svg) = sequence_svg(o) {
            let name = format!("sequence-{}.svg", o.id);
            std::fs::write(dir.join(&name), &svg)?;
            files.push(Listed {
                name: name.clone(),
                what: format!("sequence diagram of \"{}\"", o.title),
                packets: None,
                payload: None,
                size: svg.len() as u64,
                sha256: hex::encode(Sha256::digest(svg.as_bytes())),
            });
            svgs.push((o.id, name, svg));
        }
    }
    std::fs::write(dir.join(DISSECTOR_FILE), DISSECTOR)?;
    files.push(Listed {
        name: DISSECTOR_FILE.into(),
        what: "Wireshark/tshark dissector for sotto frames (tools/wireshark/sotto.lua)".into(),
        packets: None,
        payload: None,
        size: DISSECTOR.len() as u64,
        sha256: hex::encode(Sha256::digest(DISSECTOR.as_bytes())),
    });
    let sums: String = files
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256, f.name))
        .collect();
    std::fs::write(dir.join("SHA256SUMS"), &sums)?;
    let example = outcomes
        .iter()
        .find_map(|o| o.pcap.as_ref())
        .map(|p| p.name.display().to_string());

    let mut md = String::new();
    let mut html = String::new();
    let title = "sotto demo: security properties under attack";
    let held = format!("{passed} of {} properties hold.", outcomes.len());
    let intro = format!(
        "Everything ran in one process on loopback: a relay, throwaway profiles, and an attacker proxy between the clients and the relay that records every byte (pcap files below) and drops, delays, replays, modifies and injects frames. Generated by `sotto demo` in {total_s:.1} s."
    );
    let _ = writeln!(md, "# {title}\n\n{}\n\n**{held}** {intro}\n", prov.line());
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>sotto demo report</title><style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.45}}
p,li,h1,h2{{overflow-wrap:anywhere}}td{{overflow-wrap:break-word}}
h1{{font-size:1.7em;margin-bottom:.3em}}h2{{margin-top:2.2em;border-bottom:2px solid #eee;padding-bottom:.2em}}h3{{font-size:1.05em;margin:1.4em 0 .4em}}
.prov{{background:#f6f8fa;border:1px solid #dde;border-radius:6px;padding:.5em .8em;font-size:.92em;overflow-wrap:anywhere}}
.wrap{{overflow-x:auto;margin:.8em 0}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:5px 7px;vertical-align:top;text-align:left}}th{{background:#f4f4f4}}
td.n{{text-align:right;white-space:nowrap}}td.hash,code.hash{{font-family:monospace;font-size:.85em;word-break:break-all}}td.hash{{border-top:none;color:#444;padding-top:0}}tr.file td{{border-bottom:none}}
.pass{{color:#060;font-weight:bold}}.fail{{color:#b00;font-weight:bold}}td.pass{{background:#e3f6e3}}td.fail{{background:#fde2e2}}
ul.checks{{padding-left:1.4em}}ul.checks li{{margin:.2em 0;list-style:none;text-indent:-1.1em}}
.ok{{color:#060}}.bad{{color:#b00}}
pre{{background:#f6f8fa;border:1px solid #e4e4e4;padding:8px;overflow-x:auto;font-size:12px;line-height:1.35}}
code{{font-size:.92em}}.svg{{overflow-x:auto;border:1px solid #ddd;margin:.6em 0}}.svg svg{{display:block}}.svg svg.fit{{max-width:100%;height:auto}}
.legend{{font-size:.88em;color:#444}}.narrow-only{{display:none}}p.attack,p.expected{{margin:.4em 0}}
@media (max-width:640px){{body{{margin:.8em auto;padding:0 .6em}}h1{{font-size:1.35em}}td,th{{padding:4px}}.hide-narrow{{display:none}}.narrow-only{{display:block}}.svg svg.fit{{max-width:none}}}}
</style></head><body>
<h1>{title}</h1>
<p class="prov">{}</p>
<p><b>{}</b> {}</p>
"#,
        esc(&prov.line()),
        esc(&held),
        esc_code(&intro),
    );

    // Summary table: the attack in a few words and the checks; the details are in the sections.
    let _ = writeln!(
        md,
        "| # | property | attack | checks | result |\n|---|---|---|---|---|"
    );
    html.push_str("<div class=\"wrap\"><table><tr><th>#</th><th>property</th><th class=\"hide-narrow\">attack</th><th>checks</th><th>result</th></tr>\n");
    for (i, o) in outcomes.iter().enumerate() {
        let failed: Vec<String> = o
            .observed
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("✗ {}", c.what))
            .collect();
        let _ = writeln!(
            md,
            "| {} | [{}](#{}) | {} | {} | **{}**{} |",
            i + 1,
            o.title,
            o.id,
            md_cell(&o.headline),
            checks(o),
            verdict(o),
            failed
                .iter()
                .map(|f| format!("<br>{}", md_cell(f)))
                .collect::<String>()
        );
        let _ = writeln!(
            html,
            "<tr><td class=\"n\">{}</td><td><a href=\"#{}\">{}</a>{}</td><td class=\"hide-narrow\">{}</td><td class=\"n\">{} hold</td><td class=\"{}\">{}</td></tr>",
            i + 1,
            o.id,
            esc(o.title),
            failed
                .iter()
                .map(|f| format!("<br><span class=\"bad\">{}</span>", esc(f)))
                .collect::<String>(),
            esc(&o.headline),
            checks(o),
            if o.pass { "pass" } else { "fail" },
            verdict(o)
        );
    }
    html.push_str("</table></div>\n");

    // How to check: hashes, counts and commands.
    let check_intro = "Every figure about a capture below is counted from the pcap file after it was written. The files and their SHA-256:";
    let _ = writeln!(md, "\n## How to check this report\n\n{check_intro}\n");
    let _ = writeln!(
        md,
        "| file | what | packets | TCP payload bytes | size (bytes) | SHA-256 |\n|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        html,
        "<h2 id=\"check\">How to check this report</h2><p>{}</p><div class=\"wrap\"><table><tr><th>file</th><th class=\"hide-narrow\">what</th><th>packets</th><th>TCP payload bytes</th><th class=\"hide-narrow\">size (bytes)</th></tr>",
        esc(check_intro)
    );
    // The diagrams are in SHA256SUMS too; the table lists the evidence proper.
    for f in files.iter().filter(|f| !f.name.ends_with(".svg")) {
        let p = f.packets.map(|n| n.to_string()).unwrap_or_default();
        let b = f.payload.map(|n| n.to_string()).unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {} | {p} | {b} | {} | `{}` |",
            f.name,
            md_cell(&f.what),
            f.size,
            f.sha256
        );
        let _ = writeln!(
            html,
            "<tr class=\"file\"><td><a href=\"{0}\">{0}</a></td><td class=\"hide-narrow\">{1}</td><td class=\"n\">{p}</td><td class=\"n\">{b}</td><td class=\"n hide-narrow\">{2}</td></tr><tr><td colspan=\"5\" class=\"hash\">SHA-256 {3}</td></tr>",
            esc(&f.name),
            esc(&f.what),
            f.size,
            f.sha256
        );
    }
    html.push_str("</table></div>\n");
    let mut how = String::from(
        "# in the report directory:\nsha256sum -c SHA256SUMS                 # every file is the one described here\n",
    );
    if let Some(name) = &example {
        let _ = write!(
            how,
            "\n# the figures of a capture (here {name}; each scene below names its own):\n{}",
            pcap_commands(name)
        );
    }
    let _ = write!(
        how,
        "\n# the same frames in Wireshark: Analyze > Enabled Protocols > enable \"http_tcp\",\n# and load sotto.lua (copy it to the personal Lua plugins folder, Help > About > Folders)\n"
    );
    let reproduce = format!(
        "Reproduce: check out commit {} of sotto and run `cargo run --release -- demo`. Keys, message ids, timings and so the hashes differ on every run; every check must hold again. The dissector is tools/wireshark/sotto.lua in the repository (copied here as sotto.lua); Debian's tshark (with Lua) runs it.",
        prov.commit
    );
    let _ = writeln!(md, "\n```sh\n{how}```\n\n{reproduce}\n");
    let _ = writeln!(
        html,
        "<pre>{}</pre><p>{}</p>",
        esc(&how),
        esc_code(&reproduce)
    );

    // One section per scene.
    for (i, o) in outcomes.iter().enumerate() {
        let held = o.observed.iter().filter(|c| c.ok).count();
        let obs_head = format!(
            "Observed ({held} of {} checks hold, {:.1} s):",
            o.observed.len(),
            o.duration.as_secs_f64()
        );
        let _ = writeln!(
            md,
            "\n<a id=\"{}\"></a>\n\n## {}. {} — {}\n\n**Attack.** {}\n\n**Expected.** {}\n\n**{obs_head}**\n",
            o.id,
            i + 1,
            o.title,
            verdict(o),
            o.attack,
            o.expected
        );
        let _ = writeln!(
            html,
            "<section><h2 id=\"{}\">{}. {} — <span class=\"{}\">{}</span></h2><p class=\"attack\"><b>Attack.</b> {}</p><p class=\"expected\"><b>Expected.</b> {}</p><p><b>{}</b></p><ul class=\"checks\">",
            o.id,
            i + 1,
            esc(o.title),
            if o.pass { "pass" } else { "fail" },
            verdict(o),
            esc(&o.attack),
            esc(&o.expected),
            esc(&obs_head)
        );
        for c in &o.observed {
            let mark = if c.ok { "✓" } else { "✗" };
            let _ = writeln!(md, "- {mark} {}", c.what);
            let _ = writeln!(
                html,
                "<li class=\"{}\">{mark} {}</li>",
                if c.ok { "ok" } else { "bad" },
                esc_code(&c.what)
            );
        }
        html.push_str("</ul>\n");
        md.push('\n');
        for e in &o.evidence {
            match e {
                Evidence::Text(t) => {
                    let _ = writeln!(md, "{t}\n");
                    let _ = writeln!(html, "<p>{}</p>", esc_code(t));
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
                    let _ = write!(
                        html,
                        "<p>{}:</p><div class=\"wrap\"><table><tr>",
                        esc(caption)
                    );
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
                    html.push_str("</table></div>\n");
                }
            }
        }
        if let Some((_, file, svg)) = svgs.iter().find(|(id, ..)| *id == o.id) {
            // A diagram up to a quarter wider than the page's column is scaled to fit it (its text
            // stays at 9 px or so) on a wide screen; a wider one, or any on a phone, scrolls.
            let svg = if svg_px_width(svg) <= COLUMN_PX * 1.25 {
                svg.replacen("<svg ", "<svg class=\"fit\" ", 1)
            } else {
                svg.clone()
            };
            let _ = writeln!(
                md,
                "### Sequence diagram\n\n{LEGEND}\n\n![sequence diagram of {}]({file})\n",
                o.title
            );
            let _ = writeln!(
                html,
                "<h3>Sequence diagram</h3><p class=\"legend\">{} Also as a file of its own: <a href=\"{1}\">{1}</a>.</p><p class=\"legend narrow-only\">The diagram is wider than this screen: scroll it sideways.</p><div class=\"svg\">{svg}</div>",
                esc(LEGEND),
                esc(file)
            );
        }
        if let Some(p) = &o.pcap {
            let name = p.name.display().to_string();
            let facts = format!(
                "{name}: {} packets, {} bytes of TCP payload, {} bytes in all; SHA-256 {}.",
                p.summary.packets,
                p.summary.payload_bytes,
                p.summary.file_bytes,
                p.summary.sha256_hex()
            );
            let ids: Vec<String> = o
                .names
                .iter()
                .map(|(k, n)| format!("{n} = {}…", hex::encode(&k.as_bytes()[..4])))
                .collect();
            let ids = format!(
                "Identities, by the first bytes of their public keys as the dissector shows them: {}",
                ids.join(", ")
            );
            let cmds = pcap_commands(&name);
            let _ = writeln!(
                md,
                "### Capture\n\n[{name}]({name}) — {facts}\n\n{ids}\n\n```sh\n{cmds}```\n"
            );
            let _ = writeln!(
                html,
                "<h3>Capture</h3><p><a href=\"{0}\">{0}</a>: {1} packets, {2} bytes of TCP payload, {3} bytes in all; SHA-256 <code class=\"hash\">{4}</code>.</p><p>{5}</p><pre>{6}</pre>",
                esc(&name),
                p.summary.packets,
                p.summary.payload_bytes,
                p.summary.file_bytes,
                p.summary.sha256_hex(),
                esc(&ids),
                esc(&cmds)
            );
        }
        html.push_str("</section>\n");
    }
    html.push_str("</body></html>\n");
    std::fs::write(dir.join("report.md"), md)?;
    std::fs::write(dir.join("report.html"), html)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_action_says_repeats_once() {
        assert_eq!(
            tidy_action("modified: injected: a replay to dave; a replay to dave; a replay to dave"),
            "injected: a replay to dave (×3)"
        );
        assert_eq!(
            tidy_action("modified: bundle: one bit; two"),
            "modified: bundle: one bit; two"
        );
        assert_eq!(
            tidy_action("delayed 40 ms: slowed"),
            "delayed 40 ms: slowed"
        );
    }

    #[test]
    fn backticks_become_code() {
        assert_eq!(esc_code("run `a<b` now"), "run <code>a&lt;b</code> now");
        assert_eq!(esc_code("no code"), "no code");
    }

    #[test]
    fn wrap_keeps_words_and_width() {
        let t = "injected: an earlier group message replayed to dave; an earlier group message replayed to dave";
        let lines = wrap(t, 30);
        assert!(lines.iter().all(|l| l.chars().count() <= 30), "{lines:?}");
        assert_eq!(lines.join(" "), t);
        assert_eq!(wrap("", 10), Vec::<String>::new());
    }

    #[test]
    fn provenance_line_says_what_is_known() {
        let mut p = Provenance {
            version: "0.1.0".into(),
            commit: "unknown".into(),
            dirty: None,
            generated: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(
            p.line(),
            "sotto 0.1.0, commit unknown, generated 2026-01-01T00:00:00Z"
        );
        p.dirty = Some(true);
        assert!(p.line().contains("uncommitted changes"));
        let now = Provenance::current();
        assert_eq!(now.version, env!("CARGO_PKG_VERSION"));
        assert!(
            now.commit == "unknown"
                || (now.commit.len() == 40 && now.commit.chars().all(|c| c.is_ascii_hexdigit())),
            "{}",
            now.commit
        );
    }
}
