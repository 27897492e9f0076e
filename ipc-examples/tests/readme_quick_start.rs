//! The README's Quick start, built and run the way a newcomer does: a new
//! crate whose dependencies are exactly the README's ```` ```toml ```` block
//! under `## Quick start` and whose `src/main.rs` is exactly the first
//! ```` ```rust ```` block after it.
//!
//! One line is changed: `ipc-core = ...` becomes a path dependency on this
//! checkout, since the crate is not published. The crate is written under
//! this workspace's target dir and built into it, with a copy of the
//! workspace's `Cargo.lock` and `--offline`: it gets the versions the
//! workspace is tested with, reuses what is already compiled, and needs no
//! network.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What the Quick start prints: its `div(1, 0)` arm for the typed error.
const EXPECTED_STDOUT: &str = "typed application error\n";

/// Only there to catch a hang: a cold build (tokio, ipc-core and what
/// depends on them, for the new crate's features) takes about half a minute
/// on a busy 2-core machine, a warm one well under a second.
const BUILD_DEADLINE: Duration = Duration::from_secs(600);

/// Running the already built program: a server, a client, two calls.
const RUN_DEADLINE: Duration = Duration::from_secs(30);

/// The heading of the section, and the markers of the two blocks in it.
const HEADING: &str = "## Quick start";
const DEPENDENCIES_FENCE: &str = "```toml";
const CODE_FENCE: &str = "```rust";

/// The two blocks taken from the README.
#[derive(Debug)]
struct QuickStart {
    /// The ```` ```toml ```` block: `[dependencies]` and its lines.
    manifest: String,
    /// The ```` ```rust ```` block: the whole program.
    main_rs: String,
}

/// Finds the blocks: the `## Quick start` section (up to the next `## `
/// heading) must open with a ```` ```toml ```` block holding
/// `[dependencies]`, followed later in the section by a ```` ```rust ````
/// block.
fn quick_start(readme: &str) -> Result<QuickStart, String> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|l| l.trim_end() == HEADING)
        .ok_or_else(|| format!("README.md has no `{HEADING}` heading"))?;
    let section: Vec<&str> = lines.take_while(|l| !l.starts_with("## ")).collect();

    let blocks = fenced_blocks(&section)?;
    let mut blocks = blocks.into_iter();
    let manifest = match blocks.next() {
        Some((fence, body)) if fence == DEPENDENCIES_FENCE => body,
        found => {
            let found = found.map_or("none".to_owned(), |(fence, _)| {
                format!("a {fence} block first")
            });
            return Err(format!(
                "the first code block under `{HEADING}` in README.md must be a \
                 {DEPENDENCIES_FENCE} block with the `[dependencies]` a new crate needs; \
                 found {found}"
            ));
        }
    };
    if !manifest.lines().any(|l| l.trim() == "[dependencies]") {
        return Err(format!(
            "the {DEPENDENCIES_FENCE} block under `{HEADING}` in README.md has no \
             `[dependencies]` line"
        ));
    }
    let main_rs = blocks
        .find(|(fence, _)| fence == CODE_FENCE)
        .map(|(_, body)| body)
        .ok_or_else(|| {
            format!(
                "no {CODE_FENCE} block follows the {DEPENDENCIES_FENCE} block under \
                 `{HEADING}` in README.md"
            )
        })?;
    Ok(QuickStart { manifest, main_rs })
}

/// The fenced code blocks of `lines`, as (opening fence, body) in order.
fn fenced_blocks(lines: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in lines {
        match open.take() {
            None if line.starts_with("```") => {
                open = Some((line.trim_end().to_owned(), String::new()))
            }
            None => {}
            Some(block) if line.trim_end() == "```" => blocks.push(block),
            Some((fence, mut body)) => {
                body.push_str(line);
                body.push('\n');
                open = Some((fence, body));
            }
        }
    }
    match open {
        Some((fence, _)) => Err(format!(
            "a {fence} block under `{HEADING}` in README.md is never closed"
        )),
        None => Ok(blocks),
    }
}

/// `manifest` with its one `ipc-core = ...` line replaced by a path
/// dependency on `ipc_core_dir`.
fn with_local_ipc_core(manifest: &str, ipc_core_dir: &Path) -> Result<String, String> {
    let is_ipc_core = |l: &str| {
        l.split_once('=')
            .is_some_and(|(key, _)| key.trim() == "ipc-core")
    };
    match manifest.lines().filter(|l| is_ipc_core(l)).count() {
        1 => {}
        n => {
            return Err(format!(
                "the {DEPENDENCIES_FENCE} block under `{HEADING}` in README.md must have \
                 exactly one `ipc-core = ...` line; it has {n}"
            ));
        }
    }
    let path = toml_basic_string(&ipc_core_dir.to_string_lossy());
    Ok(manifest
        .lines()
        .map(|l| {
            if is_ipc_core(l) {
                format!("ipc-core = {{ path = {path} }}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect())
}

/// `s` as a TOML basic string.
fn toml_basic_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `contents` unless the file already holds them, so that an
/// unchanged crate keeps its timestamps and is not rebuilt.
fn write_if_changed(path: &Path, contents: &[u8]) {
    if fs::read(path).ok().as_deref() != Some(contents) {
        fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// The environment variables Cargo sets for the crate it runs (exact names,
/// and prefixes ending in `_`), from "Environment variables Cargo sets for
/// crates" in the Cargo book. `CARGO` itself is kept: it is the cargo run.
const CARGO_SET_FOR_CRATES: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_MAKEFLAGS",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_BIN_EXE_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// What a finished `cargo` printed.
struct Finished {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cargo ARGS` in `dir` with `CARGO_TARGET_DIR=target_dir`; kills it
/// and fails the test if it has not finished within `deadline`.
fn cargo(args: &[&str], dir: &Path, target_dir: &Path, deadline: Duration) -> Finished {
    let mut command = Command::new(env!("CARGO"));
    // Not the variables `cargo test` set for this test: build scripts that
    // watch one (ring's watches `CARGO_MANIFEST_DIR`) would see it change
    // and rebuild, here and again in the workspace's next build, which
    // shares the target dir.
    for (name, _) in std::env::vars_os() {
        let set_by_cargo = name.to_str().is_some_and(|n| {
            n == "OUT_DIR"
                || CARGO_SET_FOR_CRATES.iter().any(|p| {
                    n.strip_prefix(p)
                        .is_some_and(|rest| p.ends_with('_') || rest.is_empty())
                })
        });
        if set_by_cargo {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start cargo {args:?}: {e}"));

    // Each pipe is read to its end on a thread; both ends arrive when the
    // process has exited (or closed them).
    let (tx, rx) = mpsc::channel();
    let pipes: [(usize, Box<dyn Read + Send>); 2] = [
        (0, Box::new(child.stdout.take().expect("stdout is piped"))),
        (1, Box::new(child.stderr.take().expect("stderr is piped"))),
    ];
    for (i, mut pipe) in pipes {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((i, String::from_utf8_lossy(&buf).into_owned()));
        });
    }
    let started = Instant::now();
    let mut out = [String::new(), String::new()];
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_sub(started.elapsed())) {
            Ok((i, text)) => out[i] = text,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`cargo {}` did not finish within {deadline:?}",
                    args.join(" ")
                );
            }
        }
    }
    let status = child.wait().expect("wait for cargo");
    let [stdout, stderr] = out;
    Finished {
        success: status.success(),
        code: status.code(),
        stdout,
        stderr,
    }
}

#[test]
fn the_readme_quick_start_builds_from_its_dependencies_block_and_runs() {
    let ipc_examples = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = ipc_examples
        .parent()
        .expect("ipc-examples is in the workspace root");
    let readme = fs::read_to_string(root.join("README.md")).expect("read README.md");
    let blocks = quick_start(&readme).unwrap_or_else(|e| panic!("{e}"));
    let dependencies = with_local_ipc_core(&blocks.manifest, &root.join("ipc-core"))
        .unwrap_or_else(|e| panic!("{e}"));

    // `CARGO_TARGET_TMPDIR` is `<target dir>/tmp`, whatever the target dir is.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target_dir: PathBuf = tmp
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target dir")
        .into();
    let dir = tmp.join("readme-quick-start");
    fs::create_dir_all(dir.join("src")).expect("create the crate's directory");

    // What `cargo new` writes, plus `[workspace]`: this directory is inside
    // the checkout, whose workspace does not list it.
    let manifest = format!(
        "[package]\nname = \"readme-quick-start\"\nversion = \"0.1.0\"\n\
         edition = \"2024\"\npublish = false\n\n\
         [workspace]\n\n{dependencies}"
    );
    write_if_changed(&dir.join("Cargo.toml"), manifest.as_bytes());
    write_if_changed(&dir.join("src/main.rs"), blocks.main_rs.as_bytes());
    let lock = fs::read(root.join("Cargo.lock")).expect("read Cargo.lock");
    write_if_changed(&dir.join("Cargo.lock"), &lock);

    let build = cargo(&["build", "--offline"], &dir, &target_dir, BUILD_DEADLINE);
    assert!(
        build.success,
        "the Quick start does not build with the README's [dependencies] \
         (crate in {}):\n{manifest}\n{}",
        dir.display(),
        build.stderr
    );

    let run = cargo(
        &["run", "--offline", "--quiet"],
        &dir,
        &target_dir,
        RUN_DEADLINE,
    );
    assert!(
        run.success,
        "the Quick start exited with {:?}; stdout: {}\nstderr: {}",
        run.code, run.stdout, run.stderr
    );
    assert_eq!(
        run.stdout, EXPECTED_STDOUT,
        "the Quick start's output; stderr: {}",
        run.stderr
    );
}

#[test]
fn a_missing_dependencies_block_is_reported_by_name() {
    let readme = "# x\n\n## Quick start\n\nSome text.\n\n```rust\nfn main() {}\n```\n\n## Next\n";
    let err = quick_start(readme).expect_err("no toml block");
    assert!(err.contains("must be a ```toml block"), "{err}");
    assert!(err.ends_with("found a ```rust block first"), "{err}");

    let err = quick_start("# x\n\n## Quick start done\n").expect_err("no heading");
    assert!(err.contains("no `## Quick start` heading"), "{err}");

    // A toml block in the next section does not count.
    let readme = "## Quick start\n\ntext\n\n## Next\n\n```toml\n[dependencies]\n```\n";
    let err = quick_start(readme).expect_err("toml block outside the section");
    assert!(err.ends_with("found none"), "{err}");
}

#[test]
fn only_the_ipc_core_line_is_rewritten() {
    let readme = "## Quick start\n\n```toml\n[dependencies]\nipc-core = \"0.1\"\n\
                  serde = { version = \"1\", features = [\"derive\"] }\n```\n\ntext\n\n\
                  ```rust\nfn main() {}\n```\n";
    let blocks = quick_start(readme).expect("both blocks");
    assert_eq!(blocks.main_rs, "fn main() {}\n");
    let rewritten =
        with_local_ipc_core(&blocks.manifest, Path::new("/src/a \"b\"\\c")).expect("one line");
    assert_eq!(
        rewritten,
        "[dependencies]\nipc-core = { path = \"/src/a \\\"b\\\"\\\\c\" }\n\
         serde = { version = \"1\", features = [\"derive\"] }\n"
    );

    let err =
        with_local_ipc_core("[dependencies]\nserde = \"1\"\n", Path::new("/x")).expect_err("none");
    assert!(
        err.contains("exactly one `ipc-core = ...` line; it has 0"),
        "{err}"
    );
}
