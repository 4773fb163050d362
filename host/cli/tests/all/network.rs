//! Across a real network: central's PostgreSQL reached over TLS, set up as libpq's users set it
//! up (`sslmode`, `sslrootcert`, a password file, `PGPASSWORD`), its certificate checked, and its
//! password never printed.

use std::path::{Path, PathBuf};
use std::process::Output;

use cart_testkit::Postgres;
use cart_testkit::certs::TestCa;
use hyper::{Method, StatusCode};

use crate::one_fleet::start;
use crate::support::Fleet;

const PASSWORD: &str = "pa55-w0rd-that-must-not-show";

/// `cart-host ARGS`, with these environment variables.
fn cart_host(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cart-host"))
        .args(args)
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/nonexistent")
        .envs(env.iter().copied())
        .output()
        .expect("cart-host runs")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `text` to `dir/name`, readable by its owner only; its path.
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Waits for the edge's first units of BAG-1.
async fn first_grant(edge: &crate::support::Client) {
    crate::support::eventually(
        "the first grant",
        std::time::Duration::from_secs(15),
        || async { edge.available("BAG-1").await > 0 },
    )
    .await;
}

/// A PostgreSQL server offering TLS with a certificate for `names`, issued by `ca`.
fn tls_server(ca: &TestCa, names: &[&str]) -> Postgres {
    let server = ca.issue(names).expect("a server certificate");
    Postgres::start_tls(&server).expect("a PostgreSQL cluster with TLS")
}

/// A PostgreSQL that admits the login `cart` only over TLS and with [`PASSWORD`], a database
/// `name` in it, and the files a client needs: the URL (`verify-full`, no password in it) and
/// the password file's path.
struct TlsCentral {
    _pg: Postgres,
    dir: tempfile::TempDir,
    url: String,
    password_file: String,
}

impl TlsCentral {
    async fn start(name: &str) -> Self {
        let ca = TestCa::new("cart test CA").expect("a CA");
        let pg = tls_server(&ca, &["localhost", "127.0.0.1"]);
        pg.add_login("cart", PASSWORD, true).await.expect("a login");
        pg.database(name).await.expect("a database");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).expect("CA file");
        let url = format!(
            "postgres://cart@localhost:{}/{name}?sslmode=verify-full&sslrootcert={}",
            pg.port,
            ca_file.display()
        );
        let password_file = secret_file(dir.path(), "central-password", PASSWORD)
            .display()
            .to_string();
        Self {
            _pg: pg,
            dir,
            url,
            password_file,
        }
    }
}

/// A fleet whose central is a PostgreSQL that admits its login only over TLS, with a password:
/// the sale is loaded with `sale load`, an edge process sells, `audit` passes; the password,
/// from a file and from `PGPASSWORD`, shows in no output and no log.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_sells_and_audits_with_central_over_verified_tls_and_a_password_kept_secret() {
    let central = TlsCentral::start("tls_central").await;
    let (dir, url) = (&central.dir, central.url.clone());
    let password_file = central.password_file.as_str();

    let sale_file = dir.path().join("sale.json");
    let sale_text = serde_json::json!({
        "sale_id": "tls-sale", "starts_at": "2026-01-01T12:00:00Z", "ends_at": "2099-01-01T12:00:00Z",
        "hold_ttl_seconds": 600,
        "skus": [{"sku": "BAG-1", "name": "Bag", "price_cents": 1000, "stock": 20,
                  "limit_per_customer": 2}]
    });
    std::fs::write(&sale_file, sale_text.to_string()).expect("write");
    let the_sale = cart_central::sale::Sale::parse(&sale_text.to_string()).expect("a sale");
    let loaded = cart_host(
        &[
            "sale",
            "load",
            "--central",
            &url,
            "--central-password-file",
            password_file,
            sale_file.to_str().expect("a path"),
        ],
        &[],
    );
    assert!(loaded.status.success(), "{}", said(&loaded));

    // The test's own handle on central, and an edge process taking the password from its file.
    let fleet = Fleet::on(
        cart_central::with_password(&url, PASSWORD).expect("URL"),
        &the_sale,
    )
    .await;
    let edge = start(
        &fleet,
        "edge-1",
        &["--central", &url, "--central-password-file", password_file],
    )
    .await;
    let cart = edge.client.create_cart("c-1").await;
    first_grant(&edge.client).await;
    assert_eq!(edge.client.set(&cart, "BAG-1", 2).await.0, StatusCode::OK);
    assert_eq!(
        edge.client.checkout(&cart, "k-1").await.0,
        StatusCode::CREATED
    );

    // The audit, with the password from PGPASSWORD.
    let token_file = fleet.dir.path().join("admin-token");
    let audited = cart_host(
        &[
            "audit",
            "--central",
            &url,
            "--admin-token-file",
            token_file.to_str().expect("a path"),
            "--edge",
            &edge.client.url,
        ],
        &[("PGPASSWORD", PASSWORD)],
    );
    assert!(audited.status.success(), "{}", said(&audited));

    // A wrong password is refused, and neither password is printed.
    let wrong = secret_file(dir.path(), "wrong", "not-the-password");
    let refused = cart_host(
        &[
            "sale",
            "list",
            "--central",
            &cart_central::with_password(&url, "also-secret").expect("URL"),
        ],
        &[],
    );
    assert!(!refused.status.success());
    let text = said(&refused);
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("also-secret"), "{text}");
    let refused = cart_host(
        &[
            "sale",
            "list",
            "--central",
            &url,
            "--central-password-file",
            wrong.to_str().expect("a path"),
        ],
        &[],
    );
    assert!(!refused.status.success());
    assert!(!said(&refused).contains("not-the-password"));
    let log = std::fs::read_to_string(fleet.dir.path().join("edge-1.log")).unwrap_or_default();
    assert!(!log.contains(PASSWORD), "{log}");
    for out in [&loaded, &audited] {
        assert!(!said(out).contains(PASSWORD));
    }
}

/// `verify-full` refuses a certificate for another host, naming both; `verify-ca` takes it (the
/// chain is good) but not one from an authority it does not trust; `require` refuses a server
/// without TLS; a login the server admits only over TLS is refused with `sslmode=disable`.
#[tokio::test(flavor = "multi_thread")]
async fn central_refuses_the_wrong_certificate_and_plain_text_when_tls_is_wanted() {
    let ca = TestCa::new("cart test CA").expect("a CA");
    let pg = tls_server(&ca, &["db.example"]);
    pg.add_login("cart", PASSWORD, true).await.expect("a login");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("CA file");
    let stranger = dir.path().join("stranger.pem");
    std::fs::write(&stranger, TestCa::new("stranger").expect("CA").cert_pem()).expect("write");
    let list = |mode: &str, root: &Path| {
        let url = format!(
            "postgres://cart@localhost:{}/postgres?sslmode={mode}&sslrootcert={}",
            pg.port,
            root.display()
        );
        cart_host(
            &["sale", "list", "--central", &url],
            &[("PGPASSWORD", PASSWORD)],
        )
    };

    let out = list("verify-full", &ca_file);
    assert!(!out.status.success());
    let text = said(&out);
    println!("verify-full, a certificate for another host: {text}");
    assert!(
        text.contains("not valid for name") && text.contains("localhost"),
        "{text}"
    );
    assert!(text.contains("db.example"), "{text}");

    let out = list("verify-ca", &ca_file);
    assert!(out.status.success(), "{}", said(&out));

    let out = list("verify-ca", &stranger);
    assert!(!out.status.success());
    assert!(said(&out).contains("UnknownIssuer"), "{}", said(&out));

    let out = list("disable", &ca_file);
    assert!(!out.status.success());
    assert!(said(&out).contains("no encryption"), "{}", said(&out));

    let plain = Postgres::start().expect("a PostgreSQL cluster");
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
        plain.port
    );
    let out = cart_host(&["sale", "list", "--central", &url], &[]);
    assert!(!out.status.success());
    assert!(said(&out).contains("TLS"), "{}", said(&out));
    // And with no sslmode (prefer), the plain server is used as before.
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", plain.port);
    let out = cart_host(&["sale", "list", "--central", &url], &[]);
    assert!(out.status.success(), "{}", said(&out));
}

/// A shopper whose cart's edge is gone is told so in a shopper's words, never the peer's address
/// or a library's error; the answer's `X-Request-Id` (the client's own, when well-formed) finds
/// the detail in the edge's log.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_behind_the_edge_is_told_in_shoppers_words_and_logged_by_request_id() {
    let fleet = Fleet::new(&crate::support::sale(&[("BAG-1", 50, 2)], -60)).await;
    let one = start(&fleet, "edge-1", &[]).await;
    let mut two = start(&fleet, "edge-2", &[]).await;
    let cart = two.client.create_cart("c-2").await;
    two.child.start_kill().expect("kill -9");
    two.child.wait().await.expect("reaped");

    let path = format!("/v1/carts/{}", cart.id);
    let r = one
        .client
        .send(
            Method::GET,
            &path,
            Some(&cart.token),
            &[("x-request-id", "shopper-req-42")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["x-request-id"], "shopper-req-42");
    assert!(r.headers.contains_key("retry-after"));
    let body: serde_json::Value = r.json().expect("JSON");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not answering"), "{body}");
    for internal in ["127.0.0.1", "http", "edge-2", "error", "refused", "connect"] {
        assert!(!message.contains(internal), "{internal}: {body}");
    }
    let log = fleet.dir.path().join("edge-1.log");
    crate::support::eventually(
        "the detail logged with the request's id",
        std::time::Duration::from_secs(5),
        || async {
            std::fs::read_to_string(&log).is_ok_and(|l| {
                l.lines().any(|line| {
                    line.contains("request shopper-req-42: answered 503")
                        && line.contains("edge-2 does not answer")
                })
            })
        },
    )
    .await;

    // A malformed id is replaced by one of the edge's own; every answer carries one.
    for given in ["has spaces in it", &"x".repeat(65), ""] {
        let r = one
            .client
            .send(
                Method::GET,
                "/healthz",
                None,
                &[("x-request-id", given)],
                "",
            )
            .await;
        let id = r.headers["x-request-id"].to_str().expect("ASCII");
        assert!(id.starts_with("r_") && id.len() == 34, "{given:?} -> {id}");
    }
}

/// Through the NATS server at `queue`: a relay logging in with `relay`, another with `wrong`,
/// and edge `edge-1` with `edge`, which sells five units. The audit passes, the relay applied
/// them, and the other applied nothing and says in its log that the server refused it. The
/// edge, for what the test does next.
async fn sell_through_secured_queue(
    fleet: &Fleet,
    queue: &str,
    edge: &[&str],
    relay: &[&str],
    wrong: &[&str],
) -> crate::support::EdgeProcess {
    let stranger =
        crate::support::RelayProcess::start_with(fleet, queue, "wrong-relay", wrong).await;
    let relay = crate::support::RelayProcess::start_with(fleet, queue, "relay", relay).await;
    let mut args = vec!["--queue", queue];
    args.extend(edge);
    let edge = crate::support::EdgeProcess::start_with(fleet, "edge-1", "edge-1", &args).await;
    first_grant(&edge.client).await;
    for i in 0..5 {
        let cart = edge.client.create_cart(&format!("c-{i}")).await;
        assert_eq!(edge.client.set(&cart, "BAG-1", 1).await.0, StatusCode::OK);
        assert_eq!(
            edge.client.checkout(&cart, "k").await.0,
            StatusCode::CREATED
        );
    }
    crate::support::audit_passes(fleet, [edge.client.url.clone()]).await;
    assert!(relay.metric("cart_relay_events_applied_total").await > Some(0.0));
    assert_eq!(
        stranger.metric("cart_relay_events_applied_total").await,
        Some(0.0)
    );
    let said = fleet.log("wrong-relay");
    println!(
        "the wrong relay says: {}",
        said.lines().find(|l| l.contains("NATS")).unwrap_or("")
    );
    assert!(said.contains("uthorization"), "{said}");
    edge
}

/// Edges publish their outboxes to a NATS server that speaks only TLS and admits only a user
/// with a password, and a relay applies them: every order reaches central and the audit passes.
/// A relay with the wrong password applies nothing and says why in its log; an edge that does
/// not trust the server's certificate publishes nothing, and neither password shows anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_goes_through_nats_over_tls_with_a_password() {
    let ca = TestCa::new("cart test CA").expect("a CA");
    let server = ca
        .issue(&["localhost", "127.0.0.1"])
        .expect("a certificate");
    let nats = cart_testkit::Nats::start_secured(&server, "cart", PASSWORD).expect("NATS");
    let pg = Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("queue_tls").await.expect("database");
    let fleet = Fleet::on(url, &crate::support::sale(&[("BAG-1", 50, 2)], -60)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("CA file");
    let ca_file = ca_file.to_str().expect("a path");
    let password_file = secret_file(dir.path(), "nats-password", PASSWORD);
    let wrong_file = secret_file(dir.path(), "wrong", "not-the-nats-password");
    let queue = format!("tls://localhost:{}", nats.port);
    let with = |password_file: &Path| {
        [
            "--queue-ca".to_owned(),
            ca_file.to_owned(),
            "--queue-user".to_owned(),
            "cart".to_owned(),
            "--queue-password-file".to_owned(),
            password_file.display().to_string(),
        ]
    };
    let right = with(&password_file);
    let right: Vec<&str> = right.iter().map(String::as_str).collect();
    let wrong = with(&wrong_file);
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();

    let _edge = sell_through_secured_queue(&fleet, &queue, &right, &right, &wrong).await;
    let log = |name: &str| fleet.log(name);

    // An edge that does not trust the server's certificate: nothing leaves it.
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, TestCa::new("stranger").expect("CA").cert_pem()).expect("write");
    let mut args = vec!["--queue", &queue];
    args.extend(&right);
    args[3] = other_ca.to_str().expect("a path");
    let doubter = crate::support::EdgeProcess::start_with(&fleet, "edge-2", "edge-2", &args).await;
    first_grant(&doubter.client).await;
    let cart = doubter.client.create_cart("d-1").await;
    assert_eq!(
        doubter.client.set(&cart, "BAG-1", 1).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let status = doubter.client.status().await;
    assert_eq!(status["delivered_seq"], 0, "{status}");
    assert!(status["outbox_backlog"].as_u64() > Some(0), "{status}");
    println!(
        "the doubting edge says: {}",
        log("edge-2")
            .lines()
            .find(|l| l.contains("NATS"))
            .unwrap_or("")
    );
    assert!(log("edge-2").contains("UnknownIssuer"), "{}", log("edge-2"));

    for name in ["edge-1", "edge-2", "relay", "wrong-relay"] {
        let text = log(name);
        assert!(!text.contains(PASSWORD) && !text.contains("not-the-nats-password"));
    }
}

/// The same through a NATS server in operator mode, where a client logs in with a `.creds`
/// file (a user's JWT signed by an account the server knows, and the seed that proves it holds
/// the user's key): the edge publishes, the relay applies, the audit passes. A relay whose user
/// is signed by another operator's account applies nothing and its log says why; a damaged
/// credentials file stops `relay` before it starts, naming the file; no seed shows in a log.
#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_goes_through_nats_with_a_creds_file() {
    use cart_testkit::nats_jwt::Operator;
    let ca = TestCa::new("cart test CA").expect("a CA");
    let server = ca
        .issue(&["localhost", "127.0.0.1"])
        .expect("a certificate");
    let operator = Operator::new("cart-operator").expect("an operator");
    let account = operator.account("cart").expect("an account");
    let nats = cart_testkit::Nats::start_operated(&server, &operator, &[&account]).expect("NATS");
    let pg = Postgres::start().expect("a PostgreSQL cluster");
    let url = pg.database("queue_creds").await.expect("database");
    let fleet = Fleet::on(url, &crate::support::sale(&[("BAG-1", 50, 2)], -60)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("CA file");
    let ca_file = ca_file.to_str().expect("a path");
    let creds = |name: &str, text: String| {
        let seed = text
            .lines()
            .find(|l| l.starts_with("SU"))
            .expect("a user seed")
            .to_owned();
        let path = secret_file(dir.path(), &format!("{name}.creds"), &text);
        (path.display().to_string(), seed)
    };
    let (edge_creds, edge_seed) = creds("edge", account.user_creds("edge-1").expect("creds"));
    let (relay_creds, relay_seed) = creds("relay", account.user_creds("relay").expect("creds"));
    let elsewhere = Operator::new("another").expect("an operator");
    let (stranger_creds, _) = creds(
        "stranger",
        elsewhere
            .account("cart")
            .expect("an account")
            .user_creds("relay")
            .expect("creds"),
    );
    let queue = format!("tls://localhost:{}", nats.port);
    let with = |creds: &str| ["--queue-ca", ca_file, "--queue-creds", creds].map(str::to_owned);

    let (edge, relay, stranger) = (with(&edge_creds), with(&relay_creds), with(&stranger_creds));
    let _edge = sell_through_secured_queue(
        &fleet,
        &queue,
        &edge.each_ref().map(String::as_str),
        &relay.each_ref().map(String::as_str),
        &stranger.each_ref().map(String::as_str),
    )
    .await;
    let log = |name: &str| fleet.log(name);

    // A file that is not a credentials file: named, and nothing starts.
    let damaged = secret_file(
        dir.path(),
        "damaged.creds",
        "-----BEGIN NATS USER JWT-----\n",
    );
    let damaged = damaged.to_str().expect("a path");
    let out = cart_host(
        &[
            "relay",
            "--queue",
            &queue,
            "--central",
            &fleet.central_url,
            "--queue-creds",
            damaged,
        ],
        &[],
    );
    println!("a damaged file: {}", said(&out));
    assert!(!out.status.success());
    assert!(
        said(&out).contains("damaged.creds") && said(&out).contains("cannot parse"),
        "{}",
        said(&out)
    );

    for name in ["edge-1", "relay", "wrong-relay"] {
        let text = log(name);
        assert!(!text.contains(&edge_seed) && !text.contains(&relay_seed));
    }
}

/// No secret (central's password, the fleet secret, the operator token) shows in what a run
/// with all of them set produces: the edges' logs at debug level, their answers to shoppers,
/// to a forged peer and to a wrong token, `/admin/status`, `/admin/fleet`, `/metrics`, and
/// `--help` with the secrets in the environment.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_shows_in_a_log_an_answer_or_help() {
    use crate::one_fleet::{SECRET, start_env};
    use crate::support::ADMIN_TOKEN;
    let central = TlsCentral::start("secrets").await;
    let url = central.url.clone();
    let fleet = Fleet::on(
        cart_central::with_password(&url, PASSWORD).expect("URL"),
        &crate::support::sale(&[("BAG-1", 50, 2)], -60),
    )
    .await;
    let flags = [
        "--central",
        &url,
        "--central-password-file",
        &central.password_file,
    ];
    let debug = [("CART_LOG", "debug")];
    let one = start_env(&fleet, "edge-1", "edge-1", &flags, &debug).await;
    let mut two = start_env(&fleet, "edge-2", "edge-2", &flags, &debug).await;

    let mut seen = Vec::new();
    first_grant(&one.client).await;
    let cart = one.client.create_cart("c-1").await;
    let (_, body) = one.client.set(&cart, "BAG-1", 1).await;
    seen.push(body.to_string());
    let (_, body) = one.client.checkout(&cart, "k").await;
    seen.push(body.to_string());
    let theirs = two.client.create_cart("c-2").await;
    let (_, body) = one.client.get_cart(&theirs).await;
    seen.push(body.to_string());
    for (path, token) in [
        ("/admin/status", ADMIN_TOKEN),
        ("/admin/fleet", ADMIN_TOKEN),
        ("/metrics", ADMIN_TOKEN),
        ("/admin/status", "a-wrong-operator-token"),
    ] {
        let r = one
            .client
            .send(Method::GET, path, Some(token), &[], "")
            .await;
        seen.push(String::from_utf8_lossy(&r.body).into_owned());
    }
    let forged = one
        .client
        .send(
            Method::GET,
            &format!("/v1/carts/{}", cart.id),
            Some(&cart.token),
            &[
                ("x-cart-forwarded-by", "edge-2"),
                ("x-fleet-secret", "not-the-fleet-secret"),
            ],
            "",
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    seen.push(String::from_utf8_lossy(&forged.body).into_owned());
    two.child.start_kill().expect("kill -9");
    two.child.wait().await.expect("reaped");
    let (status, body) = one.client.get_cart(&theirs).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    seen.push(body.to_string());
    let help = cart_host(
        &["serve", "--help"],
        &[
            (
                "CART_CENTRAL",
                &cart_central::with_password(&url, PASSWORD).expect("URL"),
            ),
            (
                "CART_QUEUE",
                &format!("nats://cart:{PASSWORD}@127.0.0.1:4222"),
            ),
        ],
    );
    seen.push(said(&help));
    for edge in ["edge-1", "edge-2"] {
        let log = std::fs::read_to_string(fleet.dir.path().join(format!("{edge}.log")))
            .expect("the edge's log");
        assert!(log.contains("DEBUG"), "the log is at debug level");
        seen.push(log);
    }
    for text in &seen {
        for secret in [PASSWORD, SECRET, ADMIN_TOKEN] {
            assert!(!text.contains(secret), "{secret} in: {text}");
        }
    }
}
