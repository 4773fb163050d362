//! Runs a README the way a reader pastes it: every fenced `sh` block, in order, in one `bash`
//! (so a variable or a background job of one block is there for the next), in a fresh folder
//! that holds the build's `target` and the repository's `schema`. What the reader would see
//! fail fails the run, named by the block's line and heading.
//!
//! Directives are HTML comments (invisible when the README is rendered) on the line before a
//! block's fence:
//!
//! - `<!-- readme: not run: WHY -->`: the block is not meant to be pasted here (`make test`
//!   itself, say); the reason is required.
//! - `<!-- readme: first: COMMAND -->`: what the reader has done elsewhere before the block
//!   (`make run` in another shell: the command starts it with `&` and waits for it).
//! - `<!-- readme: cleanup -->`: run at the end, whether or not the others passed.
//!
//! In the blocks `/tmp` is the run's own folder, so runs never meet, and `curl` fails on an
//! answer of 400 or above (`--fail-with-body`, unless the block asks for `-f` itself), as the
//! reader would notice it. Everything the
//! blocks start runs in the script's process group, which is killed when the run ends.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;

/// One fenced `sh` block of the README.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Block {
    /// The line of its opening fence (1-based).
    pub line: usize,
    /// The heading it is under.
    pub heading: String,
    pub text: String,
    /// Why it is not run, when it is not.
    pub not_run: Option<String>,
    /// Shell run before it, standing for what the reader does elsewhere.
    pub first: Vec<String>,
    pub cleanup: bool,
}

/// The `sh` blocks of `markdown`, with their directives. A directive that names nothing it knows
/// is an error, so that a typo cannot quietly skip a block.
pub fn blocks(markdown: &str) -> anyhow::Result<Vec<Block>> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut pending = Block::default();
    let mut lines = markdown.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if let Some(h) = line.strip_prefix('#')
            && !line.starts_with("#!")
        {
            heading = h.trim_start_matches('#').trim().to_owned();
        } else if let Some(directive) = line
            .trim()
            .strip_prefix("<!-- readme:")
            .and_then(|d| d.strip_suffix("-->"))
        {
            let directive = directive.trim();
            if let Some(why) = directive.strip_prefix("not run:") {
                anyhow::ensure!(!why.trim().is_empty(), "line {}: say why", i + 1);
                pending.not_run = Some(why.trim().to_owned());
            } else if let Some(command) = directive.strip_prefix("first:") {
                pending.first.push(command.trim().to_owned());
            } else if directive == "cleanup" {
                pending.cleanup = true;
            } else {
                anyhow::bail!("line {}: unknown README directive {directive:?}", i + 1);
            }
        } else if line.trim_start().starts_with("```") {
            let lang = line.trim_start().trim_start_matches('`').trim();
            let mut text = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            if lang == "sh" {
                out.push(Block {
                    line: i + 1,
                    heading: heading.clone(),
                    text,
                    ..std::mem::take(&mut pending)
                });
            } else {
                anyhow::ensure!(
                    pending.not_run.is_none() && pending.first.is_empty() && !pending.cleanup,
                    "line {}: a README directive before a block that is not `sh`",
                    i + 1
                );
            }
        } else if !line.trim().is_empty() {
            anyhow::ensure!(
                pending.not_run.is_none() && pending.first.is_empty() && !pending.cleanup,
                "line {}: a README directive must come right before its block",
                i + 1
            );
        }
    }
    Ok(out)
}

/// The marker the script prints as each block starts.
const MARK: &str = "@@readme-block";

/// The script that runs `blocks` in `/tmp`'s stead `tmp`.
pub fn script(blocks: &[Block], tmp: &Path) -> String {
    let tmp = tmp.display().to_string();
    let local = |text: &str| text.replace("/tmp", &tmp);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "set -eo pipefail\n\
         curl() {{ local a; for a in \"$@\"; do case $a in --fail*|-[a-zA-Z]*f*) command curl \"$@\"; return;; esac; done; command curl --fail-with-body \"$@\"; }}\n\
         make() {{ [ \"$*\" = build ] || {{ echo \"the README runner runs no make $*\" >&2; return 1; }}; }}\n\
         trap 'echo {MARK} cleanup; {}' EXIT",
        blocks
            .iter()
            .filter(|b| b.cleanup)
            .map(|b| format!("{{ {} }} || true;", local(&b.text).replace('\'', r"'\''")))
            .collect::<String>()
    );
    for b in blocks.iter().filter(|b| b.not_run.is_none() && !b.cleanup) {
        let _ = writeln!(s, "echo {MARK} {}", b.line);
        for command in &b.first {
            let _ = writeln!(s, "{}", local(command));
        }
        s.push_str(&local(&b.text));
    }
    let _ = writeln!(s, "echo {MARK} done");
    s
}

/// How a run went: the whole output, and the block that failed (none: all passed).
pub struct Outcome {
    pub output: String,
    pub failed: Option<Block>,
}

/// Runs the README at `readme` in a fresh folder holding links to `target` and `schema`, the
/// whole run bounded by `deadline`.
pub async fn run(readme: &Path, repo: &Path, deadline: Duration) -> anyhow::Result<Outcome> {
    let markdown =
        std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let blocks = blocks(&markdown)?;
    let dir = tempfile::Builder::new().prefix("cart-readme-").tempdir()?;
    let tmp = dir.path().join("tmp");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&tmp)?;
    std::fs::create_dir_all(&work)?;
    // As /tmp is: the postgres user of a README's `runuser -u postgres` can reach it.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))?;
    }
    for part in ["target", "schema"] {
        std::os::unix::fs::symlink(repo.join(part), work.join(part))?;
    }
    let script_path = dir.path().join("readme.sh");
    std::fs::write(&script_path, script(&blocks, &tmp))?;
    // Both streams to files, so that a run cut off by the deadline still shows how far it got.
    let file = |name: &str| -> anyhow::Result<std::fs::File> {
        std::fs::File::create(dir.path().join(name)).with_context(|| format!("{name} file"))
    };
    let mut child = tokio::process::Command::new("bash")
        .arg(&script_path)
        .current_dir(&work)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(file("stdout")?)
        .stderr(file("stderr")?)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("starting bash")?;
    let pid = child.id();
    let ended = tokio::time::timeout(deadline, child.wait()).await.is_ok();
    if !ended && let Some(pid) = pid {
        // Cut off: SIGTERM to the group ends the command bash waits on, and bash then ends
        // after its EXIT trap, the cleanup block, has run (it stops what left the group, such
        // as a daemonised HAProxy).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    // Whatever the blocks left running (servers started with `&`) goes with the group.
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let mut output = read("stdout");
    if !ended {
        let _ = writeln!(output, "(no end after {deadline:?}: stopped)");
    }
    output.push_str(&read("stderr"));
    let reached: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix(MARK))
        .map(str::trim)
        .collect();
    let failed = if ended && reached.contains(&"done") {
        None
    } else {
        let last = reached
            .iter()
            .rev()
            .find_map(|l| l.parse::<usize>().ok())
            .unwrap_or(0);
        Some(
            blocks
                .iter()
                .find(|b| b.line == last)
                .cloned()
                .unwrap_or_else(|| Block {
                    heading: "(before the first block)".to_owned(),
                    ..Block::default()
                }),
        )
    };
    Ok(Outcome { output, failed })
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "# Top\n\n```sh\necho one\n```\n\n## Later\n\
        <!-- readme: not run: it is make test -->\n```sh\nmake test\n```\n\
        <!-- readme: first: server & sleep 1 -->\n```sh\ncurl /tmp/x\n```\n\
        ```text\nnot a block\n```\n<!-- readme: cleanup -->\n```sh\nkill it\n```\n";

    #[test]
    fn finds_the_blocks_and_their_directives() {
        let b = blocks(README).expect("blocks");
        assert_eq!(b.len(), 4);
        assert_eq!((b[0].line, b[0].heading.as_str()), (3, "Top"));
        assert_eq!(b[1].not_run.as_deref(), Some("it is make test"));
        assert_eq!(b[2].first, vec!["server & sleep 1".to_owned()]);
        assert!(b[3].cleanup);
        let s = script(&b, Path::new("/run/x"));
        assert!(s.contains("curl /run/x/x"), "{s}");
        assert!(!s.contains("make test"), "{s}");
    }

    #[test]
    fn a_stray_or_unknown_directive_is_an_error() {
        assert!(blocks("<!-- readme: not run: x -->\nsome text\n```sh\nx\n```\n").is_err());
        assert!(blocks("<!-- readme: skip -->\n```sh\nx\n```\n").is_err());
        assert!(blocks("<!-- readme: not run: -->\n```sh\nx\n```\n").is_err());
    }
}
