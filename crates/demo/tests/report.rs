//! The report of one whole `sotto demo` run, read as an auditor would: its provenance and
//! hashes, its wording, its diagrams, and how it looks in a real browser (headless Chromium: the
//! diagrams' text measured with `getBBox`, screenshots at desktop and phone widths).
//!
//! Without Chromium the browser test prints a SKIPPED line; in CI (`CI` set) a missing Chromium
//! is a failure, since `.ci/run` installs it. Set `SOTTO_REPORT_SCREENSHOTS=DIR` to keep the
//! screenshots and the report for a look.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sotto_demo::{Ctx, Evidence, Outcome};

/// One demo run shared by the tests of this file (it takes a few seconds).
struct Run {
    dir: tempfile::TempDir,
    outcomes: Vec<Outcome>,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let ctx = Ctx::new(Some(dir.path().to_owned()), |_| {});
        let outcomes = rt.block_on(sotto_demo::run(&ctx, None));
        sotto_demo::report::write(dir.path(), &outcomes).unwrap();
        if let Some(keep) = std::env::var_os("SOTTO_REPORT_SCREENSHOTS") {
            let keep = PathBuf::from(keep);
            std::fs::create_dir_all(&keep).unwrap();
            for e in std::fs::read_dir(dir.path()).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), keep.join(e.file_name())).unwrap();
            }
        }
        Run { dir, outcomes }
    })
}

fn read(name: &str) -> String {
    std::fs::read_to_string(run().dir.path().join(name)).unwrap()
}

/// Every text of the outcomes a reader sees.
fn visible_texts(o: &Outcome) -> Vec<String> {
    let mut t = vec![
        o.title.to_owned(),
        o.attack.clone(),
        o.headline.clone(),
        o.expected.clone(),
    ];
    t.extend(o.observed.iter().map(|c| c.what.clone()));
    for e in &o.evidence {
        match e {
            Evidence::Text(s) => t.push(s.clone()),
            Evidence::Hex { caption, .. } => t.push(caption.clone()),
            Evidence::Table {
                caption,
                header,
                rows,
            } => {
                t.push(caption.clone());
                t.extend(header.iter().cloned());
                t.extend(rows.iter().flatten().cloned());
            }
            _ => {}
        }
    }
    t
}

/// The text content of every `<text>` element of an SVG (entities left as they are).
fn svg_texts(svg: &str) -> Vec<(f64, &str, String)> {
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find("<text ") {
        rest = &rest[i..];
        let open_end = rest.find('>').unwrap();
        let attrs = &rest[..open_end];
        let close = rest.find("</text>").unwrap();
        let content = rest[open_end + 1..close]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&");
        let attr = |name: &str| {
            attrs
                .split(&format!(" {name}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
        };
        let x: f64 = attr("x").unwrap().parse().unwrap();
        out.push((x, attr("text-anchor").unwrap_or("start"), content));
        rest = &rest[close..];
    }
    out
}

fn svg_width(svg: &str) -> f64 {
    svg.split(" width=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn every_scene_passes_and_the_report_is_written() {
    let r = run();
    assert_eq!(r.outcomes.len(), sotto_demo::scenario_ids().len());
    for o in &r.outcomes {
        assert!(o.pass, "{} failed: {:?}", o.id, o.observed);
    }
    for f in ["report.md", "report.html", "SHA256SUMS", "sotto.lua"] {
        assert!(r.dir.path().join(f).exists(), "{f}");
    }
}

/// Version, commit and date are in the report; every pcap, the dissector and the diagrams are
/// in SHA256SUMS with their true hashes; each capture's figures are the file's.
#[test]
fn report_carries_provenance_and_the_hash_of_every_file() {
    let r = run();
    let md = read("report.md");
    let html = read("report.html");
    let prov = sotto_demo::report::Provenance::current();
    let line = md.lines().find(|l| l.starts_with("sotto ")).unwrap();
    assert!(
        line.starts_with(&format!("sotto {}, commit {}", prov.version, prov.commit)),
        "{line}"
    );
    // The embedded commit is the checkout's HEAD (when built from a git checkout).
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        && out.status.success()
    {
        let head = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(prov.commit, head, "the commit embedded by build.rs");
    }
    let generated = line.rsplit("generated ").next().unwrap();
    let t = humantime::parse_rfc3339(generated).unwrap();
    assert!(
        t.elapsed().unwrap() < Duration::from_secs(3600),
        "{generated}"
    );
    assert!(html.contains(&format!("commit {}", prov.commit)));

    // SHA256SUMS: checked by sha256sum itself, and listing what it must.
    let sums = read("SHA256SUMS");
    let out = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(r.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed: Vec<&str> = sums
        .lines()
        .map(|l| l.split_once("  ").unwrap().1)
        .collect();
    assert!(listed.contains(&"sotto.lua"));
    assert_eq!(
        read("sotto.lua"),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tools/wireshark/sotto.lua"
        ))
        .unwrap()
    );
    for o in &r.outcomes {
        let p = o
            .pcap
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no pcap", o.id));
        let name = p.name.display().to_string();
        assert!(listed.contains(&name.as_str()), "{name} not in SHA256SUMS");
        let hash = sums
            .lines()
            .find(|l| l.ends_with(&format!("  {name}")))
            .unwrap();
        assert!(md.contains(&hash[..64]) && html.contains(&hash[..64]));
        // The packet count of the file (read with pcap-file here) is the one the report gives.
        let mut reader = pcap_file::pcap::PcapReader::new(
            std::fs::File::open(r.dir.path().join(&name)).unwrap(),
        )
        .unwrap();
        let mut packets = 0;
        while let Some(pkt) = reader.next_packet() {
            pkt.unwrap();
            packets += 1;
        }
        assert_eq!(packets, p.summary.packets, "{name}");
        assert!(
            md.contains(&format!(
                "{name}: {packets} packets, {} bytes of TCP payload",
                p.summary.payload_bytes
            )),
            "{name}"
        );
        assert!(
            md.contains(&format!("tshark -r {name} -T fields -e tcp.len"))
                && md.contains(&format!(
                    "tshark -X lua_script:sotto.lua --enable-heuristic http_tcp -r {name} -Y sotto"
                )),
            "{name}: how to check"
        );
    }
    assert!(md.contains("sha256sum -c SHA256SUMS"));
}

/// No Rust `Debug` output, no "time(s)", check numbers in order, and the MITM advice.
#[test]
fn report_text_reads_as_prose() {
    let r = run();
    for o in &r.outcomes {
        let mut last = 0;
        for t in visible_texts(o) {
            for bad in ["(s)", "Some(", "None", "Ok(", "Err(", " { ", "::", "\\n"] {
                assert!(!t.contains(bad), "{}: {bad:?} in {t:?}", o.id);
            }
            assert!(!t.contains(" }") && !t.contains("{ "), "{}: {t:?}", o.id);
        }
        // Checks numbered by the part of the scene they belong to come in order.
        for c in &o.observed {
            if let Some((n, _)) = c.what.split_once(". ")
                && let Ok(n) = n.parse::<u32>()
            {
                assert!(n >= last, "{}: check {n} after {last}: {}", o.id, c.what);
                last = n;
            }
        }
    }
    let auth = r
        .outcomes
        .iter()
        .find(|o| o.id == "authentication")
        .unwrap();
    assert!(
        auth.observed
            .iter()
            .any(|c| c.ok && c.what.contains("compare all 12 groups")),
        "{:?}",
        auth.observed
    );
    assert!(
        visible_texts(auth)
            .iter()
            .any(|t| t.starts_with("Compare all 12 groups."))
    );
    // The summary table keeps to short columns; the observations are in the sections.
    let html = read("report.html");
    assert!(html.contains("<th>#</th><th>property</th><th class=\"hide-narrow\">attack</th><th>checks</th><th>result</th>"));
}

/// The diagrams mark the scenes' events, explain their sizes, and hold their labels.
#[test]
fn diagrams_mark_events_and_fit_their_labels() {
    let r = run();
    let svg = |id: &str| read(&format!("sequence-{id}.svg"));
    let expect = [
        ("availability", "bob: the attacker cuts the connection"),
        ("availability", "the relay is killed"),
        ("availability", "the relay restarts on the same SQLite file"),
        ("forward-secrecy", "bob: the attacker steals the profile"),
        ("post-compromise", "alice: the attacker copies the profile"),
        ("groups", "carol: the thief copies the group state"),
        ("groups", "bob: the thief copies the group state"),
    ];
    for (id, text) in expect {
        let texts: Vec<String> = svg_texts(&svg(id)).into_iter().map(|t| t.2).collect();
        assert!(
            texts.iter().any(|t| t.starts_with(text)),
            "{id}: no event {text:?} in {texts:?}"
        );
    }
    // A message arrow gives the ciphertext body (the relay's-eye table's size) and the frame.
    let meta = r.outcomes.iter().find(|o| o.id == "metadata").unwrap();
    let table = meta
        .evidence
        .iter()
        .find_map(|e| match e {
            Evidence::Table { caption, rows, .. } if caption.contains("relay's-eye") => Some(rows),
            _ => None,
        })
        .unwrap();
    let sizes: Vec<String> = table
        .iter()
        .map(|r| r[3].split(' ').next().unwrap().to_owned())
        .collect();
    for (_, _, t) in svg_texts(&svg("metadata")) {
        if let Some(rest) = t.strip_prefix("Send → ") {
            let body = rest
                .split("body ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            let frame: usize = rest
                .split("frame ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                sizes.contains(&body.to_owned()),
                "{t}: body not in the table {sizes:?}"
            );
            assert_eq!(frame, body.parse::<usize>().unwrap() + 54, "{t}");
        }
    }
    assert!(read("report.html").contains("the padded size the relay's-eye table shows"));
    // Static check with the layout's own measure (the browser test measures for real).
    for o in &r.outcomes {
        let s = svg(o.id);
        let w = svg_width(&s);
        for (x, anchor, t) in svg_texts(&s) {
            let tw = sotto_demo::report::text_width(&t);
            let (l, rt) = match anchor {
                "middle" => (x - tw / 2.0, x + tw / 2.0),
                _ => (x, x + tw),
            };
            assert!(
                l >= 0.0 && rt <= w,
                "{}: {t:?} spans {l}..{rt} of {w}",
                o.id
            );
        }
    }
}

/// A Chromium to render with: `SOTTO_CHROMIUM`, or one on the PATH.
fn chromium() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("SOTTO_CHROMIUM")
        .map(|p| vec![PathBuf::from(p)])
        .unwrap_or_else(|| {
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .map(PathBuf::from)
                .collect()
        });
    let found = candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is missing in CI (.ci/run installs it)"
        );
        eprintln!(
            "SKIPPED: Chromium is not installed (apt-get install chromium, or set SOTTO_CHROMIUM): the report was not rendered"
        );
    }
    found
}

/// Runs headless Chromium on `url` with `extra` arguments, at most a minute; returns stdout.
///
/// `--no-sandbox`: CI runs as root, where Chromium's sandbox cannot start; the page is the
/// report this test just wrote. The other switches keep it from reaching out to the network.
fn render(chrome: &Path, profile: &Path, url: &str, extra: &[String]) -> String {
    // Into a file: a pipe would fill up (the DOM is larger than its buffer) while we wait.
    let stdout = profile.join("stdout");
    let mut child = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {extra:?} took over a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium {extra:?}: {status:?}");
    std::fs::read_to_string(&stdout).unwrap()
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

/// Measures, in the page, every SVG text's box against its diagram and the page's width.
const MEASURE: &str = r#"<script>
(function () {
  var out = [];
  var svgs = document.querySelectorAll('svg');
  svgs.forEach(function (svg, i) {
    var w = svg.viewBox.baseVal.width, h = svg.viewBox.baseVal.height;
    svg.querySelectorAll('text').forEach(function (t) {
      var b = t.getBBox();
      if (b.width === 0 || b.x < -0.5 || b.x + b.width > w + 0.5 || b.y < -0.5 || b.y + b.height > h + 0.5) {
        out.push('CUT svg ' + i + ': [' + b.x.toFixed(1) + ', ' + (b.x + b.width).toFixed(1) + '] of ' + w + ': ' + t.textContent);
      }
    });
  });
  out.push('SVGS ' + svgs.length + ' TEXTS ' + document.querySelectorAll('svg text').length);
  out.push('PAGE ' + document.documentElement.scrollWidth + ' ' + window.innerWidth);
  parent.postMessage(out.join('\n'), '*');
})();
</script></body>"#;

/// A page showing `src` in a frame `width` CSS pixels wide (headless Chromium's window is at
/// least 500 px wide, so a phone's width needs a frame), collecting what the frame posts.
fn framed(src: &str, width: u32) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"></head><body style="margin:0"><iframe src="{src}" style="width:{width}px;height:2400px;border:0;display:block"></iframe><pre id="measure"></pre><script>
window.addEventListener('message', function (e) {{ document.getElementById('measure').textContent = e.data; }});
</script></body></html>"#
    )
}

#[test]
fn report_renders_in_a_real_browser() {
    let Some(chrome) = chromium() else {
        return;
    };
    let r = run();
    let profile = tempfile::tempdir().unwrap();
    let html = read("report.html");
    let svgs = html.matches("<svg ").count();
    assert!(svgs >= r.outcomes.len() - 1, "{svgs} diagrams");
    let dir = r.dir.path();
    std::fs::write(
        dir.join("report-measured.html"),
        html.replace("</body>", MEASURE),
    )
    .unwrap();
    let url = |p: &Path| format!("file://{}", p.display());
    for (label, w) in [("desktop", 1280u32), ("phone", 390)] {
        let window = format!("--window-size={},2400", w.max(500));
        // Text boxes as the browser lays them out, with its fonts.
        let page = dir.join(format!("measure-{label}.html"));
        std::fs::write(&page, framed("report-measured.html", w)).unwrap();
        let dom = render(
            &chrome,
            profile.path(),
            &url(&page),
            &[
                window.clone(),
                "--virtual-time-budget=5000".into(),
                "--dump-dom".into(),
            ],
        );
        let m = dom
            .split("<pre id=\"measure\">")
            .nth(1)
            .and_then(|s| s.split("</pre>").next())
            .unwrap_or_else(|| panic!("{label}: the measuring script did not run"));
        let m = m
            .replace("&gt;", ">")
            .replace("&lt;", "<")
            .replace("&amp;", "&");
        let cut: Vec<&str> = m.lines().filter(|l| l.starts_with("CUT")).collect();
        assert!(
            cut.is_empty(),
            "{label}: text outside its diagram:\n{}",
            cut.join("\n")
        );
        assert!(m.contains(&format!("SVGS {svgs} ")), "{label}: {m}");
        // Nothing but the scrollable boxes (tables, diagrams, code) is wider than the window.
        let page = m.lines().find(|l| l.starts_with("PAGE ")).unwrap();
        let nums: Vec<u32> = page[5..].split(' ').map(|n| n.parse().unwrap()).collect();
        assert_eq!(nums[1], w, "{label}: the frame's width");
        assert!(
            nums[0] <= nums[1],
            "{label}: the page is {} px wide in a {} px window",
            nums[0],
            nums[1]
        );

        // A screenshot, compared with one of an empty page of the same size.
        let shown = dir.join(format!("show-{label}.html"));
        std::fs::write(&shown, framed("report.html", w)).unwrap();
        let shot = dir.join(format!("report-{label}.png"));
        let blank = dir.join(format!("blank-{label}.png"));
        render(
            &chrome,
            profile.path(),
            &url(&shown),
            &[window.clone(), format!("--screenshot={}", shot.display())],
        );
        render(
            &chrome,
            profile.path(),
            "about:blank",
            &[window, format!("--screenshot={}", blank.display())],
        );
        let (png, empty) = (
            std::fs::read(&shot).unwrap(),
            std::fs::read(&blank).unwrap(),
        );
        assert_eq!(png_size(&png).0, w.max(500), "{label}");
        assert_eq!(png_size(&png), png_size(&empty));
        assert!(
            png.len() > 20 * empty.len() && png.len() > 50_000,
            "{label}: the screenshot ({} bytes) is nearly empty (a blank page: {} bytes)",
            png.len(),
            empty.len()
        );
        if let Some(keep) = std::env::var_os("SOTTO_REPORT_SCREENSHOTS") {
            std::fs::copy(
                &shot,
                PathBuf::from(keep).join(format!("report-{label}.png")),
            )
            .unwrap();
        }
    }
}
