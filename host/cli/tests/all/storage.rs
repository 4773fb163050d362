//! Storage failure for real: an edge's data folder on a small tmpfs that fills up.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hyper::StatusCode;

use crate::support::{Fleet, audit_passes, eventually, sale};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "this test mounts a tmpfs to fill a disk for real: run `make test` as root (CI does)"
        );
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs failed");
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` until it refuses another byte.
fn fill(path: &Path) {
    let mut filler = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while filler.write_all(&chunk).is_ok() {}
    let _ = filler.sync_all();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_answers_503_keeps_every_acknowledged_hold_and_recovers() {
    let fleet = Fleet::new(&sale(&[("BAG-1", 10_000, 10_000)], -60)).await;
    let mnt = tempfile::tempdir().expect("mount point");
    let disk = Tmpfs::mount(mnt.path(), "12m");
    let mut config = fleet.config("edge-a");
    config.data_dir = mnt.path().join("edge-a");
    let edge = fleet.edge_with(config).await;
    eventually("units at the edge", Duration::from_secs(10), || async {
        edge.available("BAG-1").await >= 100
    })
    .await;
    let carts = {
        let mut carts = Vec::new();
        for i in 0..8 {
            carts.push((edge.create_cart(&format!("c-{i}")).await, 0i64));
        }
        carts
    };

    let filler = mnt.path().join("filler");
    fill(&filler);
    // Shoppers keep raising their lines: nothing is acknowledged unless it is on disk.
    let mut carts = carts;
    let mut refused = 0;
    for round in 1..=30 {
        for (cart, acked) in &mut carts {
            let (status, body) = edge.set(cart, "BAG-1", round).await;
            match status {
                StatusCode::OK => *acked = round,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_eq!(body["error"]["code"], "unavailable", "{body}");
                    refused += 1;
                }
                other => panic!("a full disk answered {other}: {body}"),
            }
        }
    }
    assert!(refused > 0, "the disk never filled up");
    // Reads still answer, with exactly what was acknowledged.
    for (cart, acked) in &carts {
        let (status, body) = edge.get_cart(cart).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let held = body["lines"][0]["quantity"].as_i64().unwrap_or(0);
        assert_eq!(
            held, *acked,
            "cart {} holds {held}, acknowledged {acked}",
            cart.id
        );
    }

    // Space returns: the edge serves again, without a restart.
    std::fs::remove_file(&filler).expect("free the disk");
    eventually(
        "updates to succeed again",
        Duration::from_secs(10),
        || async { edge.set(&carts[0].0, "BAG-1", 31).await.0 == StatusCode::OK },
    )
    .await;
    carts[0].1 = 31;
    let integrity: String = rusqlite::Connection::open(mnt.path().join("edge-a/edge.db"))
        .expect("edge.db")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(integrity, "ok");
    let held: i64 = carts.iter().map(|(_, n)| n).sum();
    assert_eq!(edge.status().await["skus"]["BAG-1"]["held"], held);
    audit_passes(&fleet, [edge.url.clone()]).await;
    edge.stop().await;
    drop(disk);
}
