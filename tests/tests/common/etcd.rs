//! An etcd server on loopback ephemeral ports for the tests, killed on drop.
//!
//! etcd comes from `FSQL_ETCD_BIN` or `etcd` on PATH (`scripts/test.sh`
//! installs it). Without one, [`Etcd::start`] returns `None` (the test is
//! skipped with a message) unless `FSQL_REQUIRE_ETCD=1`, which makes it
//! panic.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flight_worker::registry::{EtcdOptions, EtcdRegistry, Registry};
use fsql_proto::registry::KeyLayout;

/// An etcd server on loopback, killed on drop.
pub struct Etcd {
    bin: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("FSQL_ETCD_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd, or None (skip) when there is no binary and etcd is not
    /// required.
    pub async fn start() -> Option<Self> {
        let Some(bin) = etcd_binary() else {
            if std::env::var("FSQL_REQUIRE_ETCD").is_ok_and(|v| v == "1") {
                panic!("no etcd binary: set FSQL_ETCD_BIN or put etcd on PATH");
            }
            eprintln!("SKIPPED: no etcd binary (set FSQL_ETCD_BIN or put etcd on PATH)");
            return None;
        };
        let mut etcd = Self {
            bin,
            dir: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        etcd.spawn();
        etcd.wait_ready().await;
        Some(etcd)
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("--name=fsql-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=fsql-test={peer}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    /// Waits until etcd answers a read.
    pub async fn wait_ready(&mut self) {
        let keys = KeyLayout::new("fsql", "ready-probe").unwrap();
        let options = EtcdOptions {
            request_timeout: Duration::from_millis(500),
            ..EtcdOptions::default()
        };
        let client = EtcdRegistry::connect(&[format!("http://{}", self.endpoint())], keys, options)
            .await
            .unwrap();
        let start = Instant::now();
        loop {
            if client.tables().await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("etcd exited with {status}: {}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd not ready after 30 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Kills etcd (SIGKILL), keeping its data directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
