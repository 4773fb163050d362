//! README.md as a reader follows it: every `sh` block, in order, in one shell, on a fresh
//! folder, with this build's binaries (`cart_testkit::readme`). A block that breaks fails
//! `make test`, named by its line and heading.

use std::time::Duration;

use cart_testkit::readme;

use crate::support::repo;

fn explain(outcome: &readme::Outcome) -> String {
    let Some(b) = &outcome.failed else {
        return String::new();
    };
    format!(
        "README.md line {} (under \"{}\") failed:\n{}\n--- what the run printed ---\n{}",
        b.line, b.heading, b.text, outcome.output
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_block_of_the_readme_runs_as_written() {
    let repo = repo();
    let outcome = readme::run(&repo.join("README.md"), &repo, Duration::from_secs(600))
        .await
        .expect("the runner");
    // What the reader would have seen, to read after a pass as well as after a failure.
    let _ = std::fs::write(repo.join("target/readme-run.log"), &outcome.output);
    assert!(outcome.failed.is_none(), "{}", explain(&outcome));
}

/// The runner is only worth its pass if it fails: a block with a mistyped command fails the
/// run, and the run names that block, not a later one.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_block_fails_the_run_and_names_it() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("README.md");
    std::fs::write(
        &file,
        "# Try it\n\n```sh\nH=target/release/cart-host\n$H --version\n```\n\n\
         ## Then\n\n```sh\n$H sale lode --central sqlite:/tmp/c.db schema/examples/sale.json\n\
         echo never\n```\n\n```sh\necho nor this\n```\n",
    )
    .expect("README");
    let outcome = readme::run(&file, &repo(), Duration::from_secs(60))
        .await
        .expect("the runner");
    let failed = outcome.failed.as_ref().expect("a failure");
    assert_eq!(
        (failed.line, failed.heading.as_str()),
        (10, "Then"),
        "{}",
        outcome.output
    );
    assert!(outcome.output.contains("lode"), "{}", outcome.output);
    assert!(!outcome.output.contains("never"), "{}", outcome.output);
    // The same file with the command spelled right passes.
    let fixed = std::fs::read_to_string(&file)
        .expect("read")
        .replace("lode", "load --starts-at now");
    std::fs::write(&file, fixed).expect("write");
    let outcome = readme::run(&file, &repo(), Duration::from_secs(60))
        .await
        .expect("the runner");
    assert!(outcome.failed.is_none(), "{}", explain(&outcome));
}

/// A block that never ends is cut off at the deadline and named; the cleanup still runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_block_that_hangs_is_cut_off_and_the_cleanup_still_runs() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("README.md");
    // Outside /tmp, which the runner gives each run afresh: the repository's target/.
    let mark = format!("target/readme-cleanup-{}.mark", std::process::id());
    let _ = std::fs::remove_file(repo().join(&mark));
    std::fs::write(
        &file,
        format!(
            "# Start\n\n```sh\necho started\n```\n\n## Forever\n\n```sh\nsleep 600\n```\n\n\
             <!-- readme: cleanup -->\n```sh\ntouch {mark}\n```\n"
        ),
    )
    .expect("README");
    let outcome = readme::run(&file, &repo(), Duration::from_secs(3))
        .await
        .expect("the runner");
    let failed = outcome.failed.as_ref().expect("a failure");
    assert_eq!(failed.heading, "Forever", "{}", outcome.output);
    assert!(
        outcome.output.contains("no end after"),
        "{}",
        outcome.output
    );
    assert!(
        repo().join(&mark).exists(),
        "no cleanup: {}",
        outcome.output
    );
    let _ = std::fs::remove_file(repo().join(&mark));
}
