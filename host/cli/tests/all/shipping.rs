//! What an operator ships and watches: the OCI image `make image` builds, run with podman as a
//! container runtime runs it; the logs as JSON lines; `/metrics` as Prometheus reads it.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cart_edge::wire::REQUEST_ID;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::{Client, EdgeProcess, Fleet, free_port, sale};

/// The image `make test` built (`make image`): its name, from `CART_IMAGE`.
fn image() -> String {
    std::env::var("CART_IMAGE")
        .expect("CART_IMAGE names the image to test: `make test` builds it with `make image`")
}

/// `podman ARGS`, with the settings `make image` uses (`CONTAINERS_CONF` and
/// `CONTAINERS_STORAGE_CONF`, which `make test` exports); its output, failing unless it succeeds.
fn podman(args: &[&str]) -> Output {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("podman runs: `make test` installs it");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A container by name, removed however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "0", &self.0])
            .output();
    }
}

/// The image runs an edge as a user that is not root, on a volume for its data: it serves a
/// sale from a SQLite central mounted beside it, answers `/readyz`, and on `podman stop` drains
/// and exits 0 well within the stop timeout.
#[tokio::test(flavor = "multi_thread")]
async fn the_image_serves_a_sale_and_drains_on_stop() {
    let image = image();
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], -60)).await;
    let data = tempfile::tempdir().expect("tempdir");
    // The image's user owns what the edge writes: its data, and central's file and journal.
    for dir in [fleet.dir.path(), data.path()] {
        std::os::unix::fs::chown(dir, Some(65532), Some(65532)).expect("chown");
    }
    std::os::unix::fs::chown(
        fleet.dir.path().join("central.db"),
        Some(65532),
        Some(65532),
    )
    .expect("chown central");
    let port = free_port();
    let name = format!("cart-test-{port}");
    let container = Container(name.clone());
    let (fleet_dir, data_dir) = (
        fleet.dir.path().display().to_string(),
        data.path().display().to_string(),
    );
    podman(&[
        "run",
        "--detach",
        "--name",
        &container.0,
        "--network",
        "host",
        "--volume",
        &format!("{fleet_dir}:{fleet_dir}"),
        "--volume",
        &format!("{data_dir}:/data"),
        "--env",
        &format!("CART_LISTEN=127.0.0.1:{port}"),
        &image,
        "serve",
        "--edge-id",
        "edge-1",
        "--central",
        &fleet.central_url,
    ]);
    let user = podman(&["inspect", "--format", "{{.Config.User}}", &name]);
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");
    // SQLite's temporary files (a big transaction's statement journal) need a folder the user
    // may write: without one, sweeping many lapsed holds at once failed every batch.
    let env = podman(&["inspect", "--format", "{{.Config.Env}}", &name]);
    assert!(String::from_utf8_lossy(&env.stdout).contains("TMPDIR=/data"));

    let edge = Client::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = edge
            .try_send(hyper::Method::GET, "/readyz", None, &[], "")
            .await;
        if ready.is_ok_and(|r| r.status == StatusCode::OK) {
            break;
        }
        let logs = podman(&["logs", &name]);
        assert!(
            Instant::now() < deadline,
            "the edge in the image was not ready within 30 s: {}",
            String::from_utf8_lossy(&logs.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cart = edge.create_cart("alice").await;
    let (status, body) = edge.set(&cart, "BAG-1", 2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        data.path().join("edge.db").exists(),
        "the edge keeps its database on the volume"
    );

    let stopping = Instant::now();
    podman(&["stop", "--time", "40", &name]);
    let took = stopping.elapsed();
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    let logs = podman(&["logs", &name]);
    let log = String::from_utf8_lossy(&logs.stderr);
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0", "{log}");
    assert!(
        took < Duration::from_secs(35),
        "the drain took {took:?}: {log}"
    );
    assert!(log.contains("draining"), "{log}");
}

/// With `--log-format json` every line the edge logs is one JSON object, and a line logged
/// while a request was served names the edge and the request id its answer gave the client.
#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_name_the_edge_and_the_request() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], -60)).await;
    let edge = EdgeProcess::start_env(
        &fleet,
        "edge-1",
        "edge-1",
        &["--log-format", "json", "--failed-logins-per-minute", "1"],
        &[("CART_LOG", "info")],
    )
    .await;
    // The second failed login in a minute is refused, and says so in the log (a warning).
    let mut answers = Vec::new();
    for id in ["login-1", "login-2"] {
        let r = edge
            .client
            .send(
                Method::GET,
                "/admin/status",
                Some("not-the-operator-token"),
                &[("x-request-id", id)],
                "",
            )
            .await;
        answers.push(r.headers[REQUEST_ID].to_str().expect("ASCII").to_owned());
    }
    assert_eq!(answers, ["login-1", "login-2"]);
    let log = eventually_logged(&fleet, "edge-1", "too many failed operator logins").await;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "edge serving" && l["spans"][0]["edge_id"] == "edge-1"),
        "{log}"
    );
    let refused = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("too many failed operator logins"))
        })
        .expect("the refusal logged");
    assert_eq!(refused["level"], "WARN", "{refused}");
    let spans = refused["spans"].as_array().expect("spans");
    assert!(
        spans.iter().any(|s| s["edge_id"] == "edge-1")
            && spans.iter().any(|s| s["request_id"] == "login-2"),
        "{refused}"
    );
    assert!(!log.contains('\u{1b}'), "no colour in a file: {log}");
}

/// Waits until the fleet process `name` has logged `what`; its log.
async fn eventually_logged(fleet: &Fleet, name: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = fleet.log(name);
        if log.contains(what) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {what:?} in the log:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/metrics` passes `promtool check metrics` (help text on every metric, Prometheus's naming
/// rules) in the classic text format, which a scrape that does not ask for OpenMetrics gets; one
/// that asks gets OpenMetrics. Both say which build and which module the edge runs.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_name_the_build_and_the_module() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10, 2)], -60)).await;
    let edge = fleet.edge("edge-1").await;
    let cart = edge.create_cart("alice").await;
    edge.set(&cart, "BAG-1", 1).await;
    let classic = edge.send(Method::GET, "/metrics", None, &[], "").await;
    assert_eq!(
        classic.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8_lossy(&classic.body).into_owned();
    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs: `make test` installs it (Debian's prometheus package)");
    let mut stdin = promtool.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes())
        .await
        .expect("write");
    drop(stdin);
    let checked = promtool.wait_with_output().await.expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let module = edge.status().await["module_version"]
        .as_str()
        .expect("module version")
        .to_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!("cart_build_info{{version=\"{version}\"}} 1")),
        "{text}"
    );
    assert!(
        text.contains(&format!("cart_module{{version=\"{module}\"}} 1")),
        "{text}"
    );
    // Every edge metric the alert rules and the dashboard query is one the edge serves: a
    // renamed metric would leave them silent.
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for file in ["prometheus/alerts.yaml", "grafana/cart-fleet.json"] {
        let queries = std::fs::read_to_string(deploy_dir().join(file)).expect("read");
        let named: std::collections::BTreeSet<&str> = queries
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| {
                w.starts_with("cart_") && !w.starts_with("cart_relay_") && *w != "cart_item"
            })
            .collect();
        assert!(!named.is_empty(), "{file} names no metric");
        let missing: Vec<_> = named.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "{file} queries {missing:?}, which the edge does not serve"
        );
    }

    let open = edge
        .send(
            Method::GET,
            "/metrics",
            None,
            &[(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )],
            "",
        )
        .await;
    assert!(
        open.headers["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        open.headers
    );
    assert!(String::from_utf8_lossy(&open.body).ends_with("# EOF\n"));
}

/// The systemd unit (host/deploy/systemd) passes `systemd-analyze verify` with nothing to say,
/// run on the binary this build made; the same unit with a key misspelt does not.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/systemd/cart-edge.service"),
    )
    .expect("the unit file");
    let built = unit.replace("/usr/local/bin/cart-host", env!("CARGO_BIN_EXE_cart-host"));
    assert_ne!(built, unit, "the unit runs /usr/local/bin/cart-host");
    let said = |unit: &str| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cart-edge.service");
        std::fs::write(&path, unit).expect("write");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(said(&built), (true, String::new()));
    let (_, misspelt) = said(&built.replace("TimeoutStopSec=", "TimeoutStopSex="));
    assert!(misspelt.contains("Unknown key"), "{misspelt}");
}

/// The repository's folder of deployment files.
fn deploy_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `kubernetes-validate` (PyPI, its schemas bundled), as `make test` installs it.
fn kubernetes_validate() -> std::path::PathBuf {
    std::env::var_os("CART_KUBERNETES_VALIDATE")
        .expect("CART_KUBERNETES_VALIDATE names kubernetes-validate: `make test` installs it")
        .into()
}

/// Every manifest under host/deploy/kubernetes passes `kubernetes-validate --strict` for
/// Kubernetes 1.30; a StatefulSet with a misspelt field does not, so the check can fail. The
/// alert rules pass `promtool check rules`.
#[test]
fn the_manifests_and_the_alert_rules_are_valid() {
    let validate = |files: &[std::path::PathBuf]| {
        Command::new(kubernetes_validate())
            .args(["--strict", "--kubernetes-version", "1.30.0", "--quiet"])
            .args(files)
            .output()
            .expect("kubernetes-validate runs")
    };
    let mut manifests: Vec<_> = std::fs::read_dir(deploy_dir().join("kubernetes"))
        .expect("the manifests")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 6, "{manifests:?}");
    let out = validate(&manifests);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("edges.yaml");
    let edges = std::fs::read_to_string(deploy_dir().join("kubernetes/edges.yaml")).expect("read");
    std::fs::write(
        &broken,
        edges.replace("podManagementPolicy:", "podManagmentPolicy:"),
    )
    .expect("write");
    let out = validate(&[broken]);
    assert!(!out.status.success(), "a misspelt field passed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("podManagmentPolicy"));

    // One version number: every image the manifests run, the migration Job's name and the API
    // document are of this release.
    let version = env!("CARGO_PKG_VERSION");
    for manifest in &manifests {
        let text = std::fs::read_to_string(manifest).expect("read");
        for image in text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
        {
            assert_eq!(
                image,
                format!("cart-host:{version}"),
                "{}",
                manifest.display()
            );
        }
    }
    let job = &yaml_documents(&deploy_dir().join("kubernetes/migrate.yaml"))[0];
    assert_eq!(job["metadata"]["name"], format!("cart-migrate-{version}"));
    let api = std::fs::read_to_string(crate::support::repo().join("schema/openapi.yaml"))
        .expect("the API document");
    assert!(
        api.contains(&format!("\n  version: {version}\n")),
        "schema/openapi.yaml"
    );

    let rules = Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy_dir().join("prometheus/alerts.yaml"))
        .output()
        .expect("promtool runs");
    assert!(
        rules.status.success(),
        "{}",
        String::from_utf8_lossy(&rules.stdout)
    );
}

/// The documents of a YAML file, as JSON (read by the Python that kubernetes-validate runs on,
/// which has PyYAML).
fn yaml_documents(path: &std::path::Path) -> Vec<Value> {
    let python = kubernetes_validate().with_file_name("python");
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The edges' StatefulSet, run as Kubernetes would run its pod `cart-edge-0`: the image's entry
/// point with exactly the container's args and environment (`$(VAR)` expanded, the pod's name and
/// namespace, the ConfigMap's central naming this test's PostgreSQL), its volumes as folders
/// (the Secret's keys as files), listening on a free port rather than 8080. Its startup,
/// readiness and liveness probes answer as written, and `SIGTERM` drains it and ends it, with
/// exit 0, within `terminationGracePeriodSeconds` less preStop's pause.
#[tokio::test(flavor = "multi_thread")]
async fn the_statefulset_runs_an_edge_that_probes_and_drains_as_written() {
    let pg = cart_testkit::Postgres::start().expect("a PostgreSQL cluster");
    let central = pg.database("statefulset").await.expect("database");
    let fleet = Fleet::on(central.clone(), &sale(&[("BAG-1", 10, 2)], -60)).await;
    let documents = yaml_documents(&deploy_dir().join("kubernetes/edges.yaml"));
    let config = yaml_documents(&deploy_dir().join("kubernetes/config.yaml"))[0]["data"].clone();
    let set = documents
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .expect("a StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The volumes as folders: the data's claim, and the Secret's keys as files.
    let root = tempfile::tempdir().expect("tempdir");
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().expect("mounts") {
        let name = mount["name"].as_str().expect("name");
        let folder = root.path().join(name);
        std::fs::create_dir(&folder).expect("folder");
        mounts.push((
            mount["mountPath"].as_str().expect("path").to_owned(),
            folder,
        ));
    }
    let secrets = &mounts
        .iter()
        .find(|(p, _)| p.contains("secrets"))
        .expect("secrets")
        .1;
    for (key, value) in [
        ("admin-token", crate::support::ADMIN_TOKEN),
        ("fleet-secret", "a fleet secret of the test's, long enough"),
        (
            "central-password",
            "unused: the test's PostgreSQL trusts its users",
        ),
    ] {
        std::fs::write(secrets.join(key), value).expect("secret");
    }
    let in_pod = |value: &str| {
        mounts.iter().fold(value.to_owned(), |v, (path, folder)| {
            v.replace(path.as_str(), &folder.display().to_string())
        })
    };

    // The environment, in order, each `$(VAR)` taking what came before it.
    let port = free_port();
    let mut env: Vec<(String, String)> = Vec::new();
    let expand = |value: &str, env: &[(String, String)]| {
        env.iter().fold(value.to_owned(), |v, (name, value)| {
            v.replace(&format!("$({name})"), value)
        })
    };
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("name").to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            expand(value, &env)
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match field {
                "metadata.name" => "cart-edge-0".to_owned(),
                "metadata.namespace" => "shop".to_owned(),
                other => panic!("a field the test does not know: {other}"),
            }
        } else if let Some(key) = var["valueFrom"]["configMapKeyRef"]["key"].as_str() {
            match config[key].as_str() {
                _ if key == "central" => central.clone(),
                Some(value) => value.to_owned(),
                // An optional key the ConfigMap as shipped does not have: unset.
                None if var["valueFrom"]["configMapKeyRef"]["optional"] == true => continue,
                None => panic!("the ConfigMap has no {key}"),
            }
        } else {
            panic!("a variable the test does not know: {var}")
        };
        let value = if name == "CART_LISTEN" {
            value.replace(":8080", &format!(":{port}"))
        } else {
            in_pod(&value)
        };
        env.push((name, value));
    }
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| expand(a.as_str().expect("arg"), &env))
        .collect();
    assert!(
        args.contains(&"cart-edge-0".to_owned())
            && args
                .iter()
                .any(|a| a == "http://cart-edge-0.cart-edge-peers.shop.svc.cluster.local:8080"),
        "{args:?}"
    );
    let log = std::fs::File::create(root.path().join("edge.log")).expect("log");
    let mut edge = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("cart-host starts");
    let log = || std::fs::read_to_string(root.path().join("edge.log")).unwrap_or_default();

    let client = Client::new(&format!("http://127.0.0.1:{port}"));
    let probe = |probe: &str| {
        let path = container[probe]["httpGet"]["path"]
            .as_str()
            .expect("path")
            .to_owned();
        let client = client.clone();
        async move {
            client
                .try_send(Method::GET, &path, None, &[], "")
                .await
                .is_ok_and(|r| r.status == StatusCode::OK)
        }
    };
    let startup = &container["startupProbe"];
    let within = Duration::from_secs(
        startup["periodSeconds"].as_u64().expect("period")
            * startup["failureThreshold"].as_u64().expect("threshold"),
    );
    let deadline = Instant::now() + within;
    while !probe("startupProbe").await {
        assert!(
            Instant::now() < deadline,
            "not started within {within:?}: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !probe("readinessProbe").await {
        assert!(Instant::now() < deadline, "never ready: {}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(probe("livenessProbe").await, "{}", log());
    let cart = client.create_cart("alice").await;
    let (status, body) = client.set(&cart, "BAG-1", 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace")
        - container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
    let stopping = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &edge.id().expect("pid").to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let exited = tokio::time::timeout(Duration::from_secs(grace), edge.wait())
        .await
        .unwrap_or_else(|_| panic!("not ended within {grace} s of SIGTERM: {}", log()))
        .expect("reaped");
    assert!(exited.success(), "{exited}: {}", log());
    let log = log();
    assert!(log.contains("draining"), "{log}");
    // Every line the StatefulSet's edge logged is JSON (its CART_LOG_FORMAT).
    for line in log.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    eprintln!("drained and ended in {:?}", stopping.elapsed());
    drop(fleet);
}

/// The migration Job's command (its container's args, with central's URL and a password file
/// as the Job gives them) brings a new PostgreSQL database's schema up to date, says so, and
/// says so again the second time; pointed at a server that is not there it fails, naming central
/// without the password.
#[tokio::test(flavor = "multi_thread")]
async fn the_migration_job_brings_a_new_central_up_to_date() {
    let pg = cart_testkit::Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("migrated").await.expect("database");
    let job = &yaml_documents(&deploy_dir().join("kubernetes/migrate.yaml"))[0];
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg"))
        .collect();
    assert_eq!(args, ["migrate"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let password = dir.path().join("central-password");
    std::fs::write(&password, "s3cret-of-the-test").expect("password");
    let migrate = |central: &str| {
        Command::new(env!("CARGO_BIN_EXE_cart-host"))
            .args(&args)
            .env_clear()
            .env("CART_CENTRAL", central)
            .env("CART_CENTRAL_PASSWORD_FILE", &password)
            .output()
            .expect("cart-host runs")
    };
    for _ in 0..2 {
        let out = migrate(&url);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("its schema is up to date"));
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let applied: i64 = client
        .query_one("SELECT COUNT(*) FROM refinery_schema_history", &[])
        .await
        .expect("refinery's history")
        .get(0);
    let known = std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/central"),
    )
    .expect("the migrations")
    .count();
    assert_eq!(usize::try_from(applied).expect("count"), known);

    let gone = format!("postgres://cart@127.0.0.1:{}/cart", free_port());
    let out = migrate(&gone);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("127.0.0.1") && !said.contains("s3cret"),
        "{said}"
    );
    // In JSON, the error that ended the command is a log line like the others.
    let out = Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(["--log-format", "json", "migrate", "--central", &gone])
        .output()
        .expect("cart-host runs");
    let said = String::from_utf8_lossy(&out.stderr);
    let last: Value = serde_json::from_str(said.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: not JSON: {said}"));
    assert_eq!(last["level"], "ERROR", "{said}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("migrating central")),
        "{said}"
    );
}
