//! `cart-host rules`: for authors of cart rules. `new` writes a crate of one's own rules (the
//! default rules written out, the WIT beside them), outside any workspace; `check` makes every
//! check an edge makes of a module before it takes it, offline, with the edge's messages;
//! `diff` runs two modules on the same requests and reports where they decide differently
//! ([`diff`]).

mod cases;
mod diff;
mod generate;
mod invariants;
mod shrink;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cart_central::time::wall_ms;
use cart_edge::asked::Asked;
use cart_edge::http_client::HttpClient;
use cart_edge::modules::{MAX_MODULE_BYTES, smoke};
use cart_edge::wasm::{LoadedModule, ModuleError, Runtime};
use cart_edge::wire::fetch_asked;
use serde_json::json;

#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Write a new crate of cart rules into DIR (which must not exist): Cargo.toml, the WIT, the
    /// default rules in src/lib.rs to change, and a README with the commands to build it and
    /// check it. It builds with nothing from this repository.
    New {
        dir: PathBuf,
        /// The crate's name (by default the folder's, made a valid crate name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Check a module as an edge does before it takes one, offline: its size, that it is a
    /// component of the flashsale:cart world, and a smoke run of a cart's life under the guest
    /// limits. Exits 0 if an edge would take it, 1 if not, saying why in the edge's words (2 if
    /// it cannot be read).
    Check {
        /// The component to check (`target/wasm32-wasip2/release/NAME.wasm`).
        module: PathBuf,
        #[command(flatten)]
        guest: super::GuestArgs,
    },
    /// Hold a module to what the edge's books need of any rules, on generated requests (around
    /// a sale's start and end, holds lapsing, the limit, the units free, closed carts, replayed
    /// checkouts): it never traps or overruns, never holds more than is free or past the limit,
    /// never changes a checked-out cart, places only open carts whose lines are all held,
    /// replays only checked-out ones. Prints each rule, and for a broken one the simplest
    /// request found that breaks it, shrunk. With --cases, also the author's own scenarios.
    /// Exits 0 if no rule is broken and every case decides as expected, 1 if not, 2 if it
    /// cannot run.
    Test {
        /// The component to test.
        module: PathBuf,
        /// A JSON file of scenarios, each a request and the decision expected, times in
        /// seconds from now (schema/rules-cases.schema.json; `rules new` writes one,
        /// cases.json, that the default rules pass).
        #[arg(long)]
        cases: Option<PathBuf>,
        #[command(flatten)]
        asking: Asking,
    },
    /// Run two modules on the same generated requests (around a sale's start and end, holds
    /// lapsing, the limit, the units free, closed carts, replayed checkouts) and, with --edge,
    /// on the requests an edge's rules were asked most recently; report how many decisions
    /// differ, by kind, with examples. Exits 0 if none differ, 1 if some do, 2 if it cannot run,
    /// as diff does.
    Diff {
        /// The module decisions are compared against (the one the fleet runs, say).
        old: PathBuf,
        /// The module to compare.
        new: PathBuf,
        /// An edge whose most recent requests (up to 1,000) to ask both modules too; needs
        /// the operator token.
        #[arg(long)]
        edge: Option<String>,
        /// File holding the operator token the edge accepts, for --edge.
        #[arg(long, env = "CART_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
        #[command(flatten)]
        tls: super::FleetCaArgs,
        #[command(flatten)]
        asking: Asking,
    },
}

/// What `rules test` and `rules diff` ask, under which limits, and how they report.
#[derive(clap::Args)]
pub struct Asking {
    /// Set-quantity requests to ask, and as many checkouts.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// The requests' seed: the same seed asks the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object instead of text: the same findings, each request
    /// as a case file writes it and each decision as a case's `expect` would.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    guest: super::GuestArgs,
}

/// Runs a rules command. As `diff` does, one that cannot run (a module that will not load, a
/// case file or an edge that cannot be read) exits 2, apart from the 1 of a finding, so that a
/// script's `|| show the findings` does not mistake one for the other.
pub async fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    Ok(run_or_fail(command).await.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    }))
}

async fn run_or_fail(command: RulesCommand) -> anyhow::Result<ExitCode> {
    // An edge's requests are fetched first, on the async runtime.
    let recorded = match &command {
        RulesCommand::Diff {
            edge: Some(url),
            admin_token_file,
            tls,
            ..
        } => Some(recorded_at(url, admin_token_file.as_deref(), tls).await?),
        _ => None,
    };
    // Outside the async runtime, as an edge's writer calls guests: what a guest built with std
    // writes to stderr goes through WASI, which blocks on a runtime of its own.
    std::thread::scope(|s| s.spawn(|| run_here(command, recorded)).join())
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the rules command panicked")))
}

/// The requests the edge at `url` was asked most recently, and from where, as the report says.
async fn recorded_at(
    url: &str,
    token_file: Option<&Path>,
    tls: &super::FleetCaArgs,
) -> anyhow::Result<(String, Vec<Asked>)> {
    let client = super::edge_client(tls.fleet_ca.as_deref(), Duration::from_secs(30))?;
    let token = super::admin_token(token_file)?;
    Ok((
        format!("recorded at {url}"),
        recorded(&client, url, token.as_deref()).await?,
    ))
}

/// The requests the edge at `url` was asked most recently, as the rules are asked them here.
pub async fn recorded(
    client: &HttpClient,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<Asked>> {
    let asked = fetch_asked(client, url, token)
        .await
        .with_context(|| format!("reading the requests {url} was asked"))?;
    let (mut read, mut unread) = (Vec::new(), Vec::new());
    for (i, form) in asked.asked.iter().enumerate() {
        match form.asked(generate::NOW) {
            Ok(asked) => read.push(asked),
            Err(e) => unread.push(format!("request {i}: {e}")),
        }
    }
    if let Some(first) = unread.first() {
        eprintln!(
            "{url}: {} of the {} requests it was asked could not be read and are left out; {first}",
            unread.len(),
            asked.asked.len()
        );
    }
    Ok(read)
}

fn run_here(
    command: RulesCommand,
    recorded: Option<(String, Vec<Asked>)>,
) -> anyhow::Result<ExitCode> {
    let passed = match command {
        RulesCommand::New { dir, name } => return new(&dir, name).map(|()| ExitCode::SUCCESS),
        RulesCommand::Check { module, guest } => return check(&module, &guest),
        RulesCommand::Test {
            module,
            cases,
            asking,
        } => {
            let runtime = Runtime::new(asking.guest.limits())?;
            let loaded = load(&runtime, &module)?;
            // A case file that cannot be read fails before the long run.
            let ran = cases.map(|path| cases::run(&loaded, &path)).transpose()?;
            let found = invariants::test(&loaded, generate::requests(asking.requests, asking.seed));
            let passed = found.broken.is_empty() && ran.as_ref().is_none_or(|r| r.failed() == 0);
            if asking.json {
                let report = json!({
                    "module": module.display().to_string(),
                    "passed": passed,
                    "invariants": found.json(),
                    "cases": ran,
                });
                println!("{report:#}");
            } else {
                print!("{}", found.report(&module.display().to_string()));
                if let Some(ran) = &ran {
                    print!("{}", ran.report());
                }
            }
            passed
        }
        RulesCommand::Diff {
            old, new, asking, ..
        } => {
            let runtime = Runtime::new(asking.guest.limits())?;
            let (a, b) = (load(&runtime, &old)?, load(&runtime, &new)?);
            let mut diffs = vec![diff::diff(
                &a,
                &b,
                generate::requests(asking.requests, asking.seed),
                "generated",
            )];
            if let Some((from, asked)) = recorded {
                diffs.push(diff::diff(&a, &b, asked, &from));
            }
            let differing: usize = diffs.iter().map(|d| d.differing).sum();
            let (old, new) = (old.display().to_string(), new.display().to_string());
            if asking.json {
                let report = json!({"old": old, "new": new, "differing": differing, "runs": diffs});
                println!("{report:#}");
            } else {
                for d in &diffs {
                    print!("{}", d.report(&old, &new));
                }
            }
            differing == 0
        }
    };
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `rules diff` of the fleet's module (`old`: its version and bytes) and the one at `new`, as
/// `deploy --diff` shows it before going on, on generated requests and on `recorded` ones (where
/// from, and the requests): the report, and how many decisions differ. Runs the guests off the
/// async runtime, as [`run`] does.
pub fn diff_with_fleet(
    old: (&str, &[u8]),
    new: &Path,
    recorded: Option<(String, Vec<Asked>)>,
) -> anyhow::Result<(String, usize)> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = Runtime::new(super::GuestArgs::default().limits())?;
            let fleet = runtime
                .load(old.1, old.0)
                .with_context(|| format!("loading the fleet's module {}", old.0))?;
            let module = load(&runtime, new)?;
            let mut diffs = vec![diff::diff(
                &fleet,
                &module,
                generate::requests(DIFF_REQUESTS, 1),
                "generated",
            )];
            if let Some((from, asked)) = recorded {
                diffs.push(diff::diff(&fleet, &module, asked, &from));
            }
            let named = format!("the fleet's module ({})", old.0);
            let new = new.display().to_string();
            Ok((
                diffs.iter().map(|d| d.report(&named, &new)).collect(),
                diffs.iter().map(|d| d.differing).sum(),
            ))
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("comparing the modules panicked")))
    })
}

/// Requests of each call `deploy --diff` asks, as `rules diff` does by default.
const DIFF_REQUESTS: usize = 10_000;

/// The module at `path`, compiled and linked as an edge would.
fn load(runtime: &Runtime, path: &Path) -> anyhow::Result<LoadedModule> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    runtime
        .load(&bytes, &path.display().to_string())
        .with_context(|| format!("loading {}", path.display()))
}

/// The crate `rules new` writes, but for its name.
const CARGO_TOML: &str = include_str!("../../../templates/rules/Cargo.toml.in");
const README: &str = include_str!("../../../templates/rules/README.md.in");
const LIB_RS: &str = include_str!("../../../templates/rules/lib.rs");
const CASES: &str = include_str!("../../../templates/rules/cases.json");
const WIT: &str = include_str!("../../../../../wit/cart.wit");

fn new(dir: &Path, name: Option<String>) -> anyhow::Result<()> {
    anyhow::ensure!(
        !dir.exists(),
        "{} exists: name a folder that does not, and rules new makes it",
        dir.display()
    );
    let name = match name {
        Some(name) => {
            anyhow::ensure!(
                crate_name(&name) == name,
                "{name:?} is not a crate name: use lowercase letters, digits and `-`, starting \
                 with a letter"
            );
            name
        }
        None => crate_name(&dir.file_name().unwrap_or_default().to_string_lossy()),
    };
    let lib = name.replace('-', "_");
    let fill = |text: &str| text.replace("{name}", &name).replace("{lib}", &lib);
    // Written beside, then renamed: the folder appears whole or not at all.
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let partial = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let written = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(partial.join("src"))?;
        std::fs::create_dir_all(partial.join("wit"))?;
        std::fs::write(partial.join("Cargo.toml"), fill(CARGO_TOML))?;
        std::fs::write(partial.join("README.md"), fill(README))?;
        std::fs::write(partial.join("src/lib.rs"), LIB_RS)?;
        std::fs::write(partial.join("cases.json"), CASES)?;
        std::fs::write(partial.join("wit/cart.wit"), WIT)?;
        std::fs::write(partial.join(".gitignore"), "/target\n")?;
        std::fs::rename(&partial, dir)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e.context(format!("writing {}", dir.display())));
    }
    println!(
        "wrote {dir}: the crate {name}, with the default rules in src/lib.rs to change.\n\
         Build it, check it and test it:\n\n  cd {dir}\n  rustup target add wasm32-wasip2   # once\n  \
         cargo build --release --target wasm32-wasip2\n  \
         cart-host rules check target/wasm32-wasip2/release/{lib}.wasm\n  \
         cart-host rules test target/wasm32-wasip2/release/{lib}.wasm --cases cases.json",
        dir = shell_quoted(&dir.display().to_string())
    );
    Ok(())
}

/// `path` as a shell reads it back: quoted if it has anything but letters, digits and `/._-`.
fn shell_quoted(path: &str) -> String {
    if path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        path.to_owned()
    } else {
        format!("'{}'", path.replace('\'', r"'\''"))
    }
}

/// `text` as a crate name: lowercase letters, digits and single dashes, starting with a letter.
fn crate_name(text: &str) -> String {
    let mut name = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_end_matches('-');
    if name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.to_owned()
    } else {
        format!("rules-{name}").trim_end_matches('-').to_owned()
    }
}

fn check(module: &Path, guest: &super::GuestArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let shown = module.display();
    if bytes.len() > MAX_MODULE_BYTES {
        println!(
            "{shown}: refused: {} bytes; an edge takes a body of at most {MAX_MODULE_BYTES}",
            bytes.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    let runtime = Runtime::new(guest.limits())?;
    let started = Instant::now();
    let checked = runtime.load(&bytes, "checked").and_then(|loaded| {
        let compiled = started.elapsed();
        smoke(&loaded, wall_ms())
            .map(|()| compiled)
            .map_err(ModuleError::SmokeFailed)
    });
    match checked {
        Ok(compiled) => {
            println!(
                "{shown}: an edge would take it: a flashsale:cart component of {} KiB, compiled \
                 in {:.2} s, that passed the smoke check",
                bytes.len().div_ceil(1024),
                compiled.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{shown}: refused: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::crate_name;

    #[test]
    fn folder_names_become_crate_names() {
        assert_eq!(crate_name("my-rules"), "my-rules");
        assert_eq!(crate_name("My Rules_2"), "my-rules-2");
        assert_eq!(crate_name("2026 rules!"), "rules-2026-rules");
        assert_eq!(crate_name("..."), "rules");
    }

    #[test]
    fn paths_are_printed_as_a_shell_reads_them() {
        assert_eq!(super::shell_quoted("rules/my-rules"), "rules/my-rules");
        assert_eq!(super::shell_quoted("My Rules"), "'My Rules'");
        assert_eq!(super::shell_quoted("it's"), r"'it'\''s'");
    }
}
