//! `sotto chat` end to end: a real relay and two real `sotto chat` processes, each in its own
//! tmux session with its own profile. Keys are typed into one with `send-keys`; the other's
//! screen is read with `capture-pane` until the message appears (bounded waits). Skipped, with
//! a message, when tmux is not installed (`.ci/run` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(30);

struct Relay(Child);

impl Relay {
    fn start(db: &Path, port: u16) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args(["relay", "--listen", &format!("127.0.0.1:{port}"), "--store"])
            .arg(format!("sqlite:{}", db.display()))
            .args(["--sync", "normal"])
            .env("SOTTO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening"), "relay banner {line:?}");
        Self(child)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sotto(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(args)
        .env("SOTTO_PROFILE", dir)
        .env("SOTTO_PASSPHRASE", PW)
        .env("SOTTO_INSECURE_TEST_KDF", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sotto {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }
    fn run(&self, args: &[&str]) -> String {
        let o = self.cmd().args(args).output().unwrap();
        assert!(
            o.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// Starts `sotto chat` for the profile in `dir` in a new 100x30 session `name`. When chat
    /// exits, the pane shows its exit status.
    fn chat(&self, name: &str, dir: &Path) {
        self.chat_with(name, dir, "");
    }
    fn chat_with(&self, name: &str, dir: &Path, env: &str) {
        let script = format!(
            "env SOTTO_PROFILE='{}' SOTTO_PASSPHRASE='{PW}' TERM=xterm-256color {env} '{}' chat; echo \"chat exited with $?\"; sleep 60",
            dir.display(),
            env!("CARGO_BIN_EXE_sotto"),
        );
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "100",
            "-y",
            "30",
            &script,
        ]);
    }
    fn capture(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", name])
    }
    fn keys(&self, name: &str, text: &str) {
        self.run(&["send-keys", "-t", name, "-l", text]);
    }
    fn key(&self, name: &str, key: &str) {
        self.run(&["send-keys", "-t", name, key]);
    }
    /// Waits (bounded) until the pane shows `want`; returns the screen.
    fn wait_for(&self, name: &str, want: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture(name);
            if screen.contains(want) {
                return screen;
            }
            if start.elapsed() > WAIT {
                panic!("{name}'s screen never showed {want:?} within {WAIT:?}:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_message_typed_in_one_chat_appears_in_the_other() {
    if !tmux_available() {
        println!(
            "SKIPPED: tmux is not installed (apt-get install tmux); the chat e2e test did not run"
        );
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _relay = Relay::start(&root.path().join("relay.db"), port);
    let url = format!("ws://127.0.0.1:{port}/");
    let dirs: Vec<PathBuf> = ["alice", "bob"]
        .iter()
        .map(|n| {
            let d = root.path().join(n);
            sotto(&d, &["init"]);
            sotto(&d, &["register", "--relay", &url]);
            d
        })
        .collect();
    let (alice, bob) = (&dirs[0], &dirs[1]);
    let alice_invite = sotto(alice, &["invite", "--plain"]).trim().to_owned();
    let bob_invite = sotto(bob, &["invite", "--plain"]).trim().to_owned();
    sotto(alice, &["contact", "add", "bob", &bob_invite]);
    sotto(bob, &["contact", "add", "alice", &alice_invite]);

    let tmux = Tmux {
        socket: format!("sotto-chat-test-{}", std::process::id()),
    };
    tmux.chat("alice", alice);
    tmux.chat("bob", bob);
    tmux.wait_for("alice", "● connected");
    tmux.wait_for("bob", "● connected");

    tmux.keys("alice", "hello bob, typed in tmux");
    tmux.key("alice", "Enter");
    let screen = tmux.wait_for("bob", "alice: hello bob, typed in tmux");
    assert!(screen.contains("Conversations"), "{screen}");
    // Bob's client sent an encrypted receipt: alice sees it delivered.
    tmux.wait_for("alice", "me: hello bob, typed in tmux · delivered");

    // And back, with a bad command first: an error line, the UI stays up.
    tmux.keys("bob", "/nonsense");
    tmux.key("bob", "Enter");
    tmux.wait_for("bob", "error: unknown command");
    tmux.keys("bob", "hi alice");
    tmux.key("bob", "Enter");
    tmux.wait_for("alice", "bob: hi alice");

    // /quit leaves the UI with status 0 and the normal screen back.
    for who in ["alice", "bob"] {
        tmux.keys(who, "/quit");
        tmux.key(who, "Enter");
        let screen = tmux.wait_for(who, "chat exited with 0");
        assert!(!screen.contains("Conversations"), "{screen}");
    }

    // A panic inside the UI (forced by a test hook after the first frame) still restores the
    // terminal: the panic message and the shell's next line land on the normal screen.
    tmux.chat_with("crash", alice, "SOTTO_TUI_CRASH_TEST=1 RUST_BACKTRACE=0");
    let screen = tmux.wait_for("crash", "chat exited with 101");
    assert!(screen.contains("deliberate panic"), "{screen}");
    assert!(
        !screen.contains("Conversations"),
        "UI left on screen:\n{screen}"
    );
    // Raw mode is off again: the panic message's second line starts at column 0 (in raw mode a
    // newline does not return the carriage and the line would be pushed right).
    let line = screen
        .lines()
        .find(|l| l.contains("deliberate panic"))
        .unwrap();
    assert!(
        line.starts_with("SOTTO_TUI_CRASH_TEST"),
        "{line:?}\n{screen}"
    );
}
