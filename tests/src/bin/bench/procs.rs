//! Scaling: clusters of separately started `flight-worker` processes, each
//! pinned to one core with `taskset`, fronted by a coordinator running in
//! this (unpinned) process.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use bytes::Bytes;
use flight_coordinator::engine::EngineConfig;
use flight_coordinator::server::{CoordinatorConfig, CoordinatorHandle};
use flight_coordinator::tpch;

use crate::client::Client;
use crate::{Comparison, Opts};

/// Worker processes and the coordinator in front of them.
struct PinnedCluster {
    children: Vec<Child>,
    coordinator: Option<CoordinatorHandle>,
    _dir: tempfile::TempDir,
}

impl Drop for PinnedCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn worker_bin(opts: &Opts) -> PathBuf {
    if let Some(p) = &opts.worker_bin {
        return p.clone();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.with_file_name(format!("flight-worker{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: build the workspace binaries first (cargo build [--release] \
         --workspace --bins) or pass --worker-bin",
        bin.display()
    );
    bin
}

fn have_taskset() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl PinnedCluster {
    /// Starts one worker per core in `cores` (1 DuckDB thread each) and a
    /// coordinator over them.
    async fn start(bin: &Path, cores: &[usize], pin: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let mut children = Vec::new();
        let mut urls = Vec::new();
        for (i, core) in cores.iter().enumerate() {
            let mut cmd = if pin {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(bin);
                c
            } else {
                Command::new(bin)
            };
            cmd.args(["--listen", "127.0.0.1:0", "--threads", "1", "--log", "warn"])
                .arg("--data-dir")
                .arg(dir.path().join(format!("worker-{i}")))
                .env("FSQL_SECRET", &secret)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let stdout = child.stdout.take().unwrap();
            let line = tokio::task::spawn_blocking(move || {
                let mut r = std::io::BufReader::new(stdout);
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                // Keep reading (and discarding) so the worker never blocks on stdout.
                std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
                line
            })
            .await
            .unwrap();
            let url = line
                .split_whitespace()
                .last()
                .unwrap_or_else(|| panic!("worker {i} did not start: {line:?}"))
                .to_string();
            children.push(child);
            urls.push(url);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = CoordinatorConfig {
            secret: Bytes::from(secret),
            engine: EngineConfig::default(),
            security: Default::default(),
        };
        let pool = flight_coordinator::server::worker_pool(&config);
        let registry = flight_coordinator::server::static_registry(&pool, &urls, None)
            .await
            .unwrap();
        let coordinator = flight_coordinator::server::start(config, registry, listener)
            .await
            .unwrap();
        Self {
            children,
            coordinator: Some(coordinator),
            _dir: dir,
        }
    }

    fn coordinator(&self) -> &CoordinatorHandle {
        self.coordinator.as_ref().unwrap()
    }

    async fn load(&self, opts: &Opts, shards: u32) {
        let t = Instant::now();
        flight_coordinator::local::load_tpch(
            self.coordinator().engine(),
            opts.sf,
            shards,
            opts.layout(),
        )
        .await
        .unwrap();
        eprintln!("  loaded in {:.1}s", t.elapsed().as_secs_f64());
    }

    async fn shutdown(mut self) {
        if let Some(c) = self.coordinator.take() {
            c.shutdown().await;
        }
    }
}

/// Returns the speedup of the total.
pub async fn scaling(opts: &Opts) -> f64 {
    let bin = worker_bin(opts);
    let pin = have_taskset();
    if !pin {
        eprintln!("taskset not found: the workers run unpinned");
    }
    let shards = opts.shards.unwrap_or(2);
    eprintln!(
        "scaling: 1 pinned worker (core 0), TPC-H SF {}, {shards} shards",
        opts.sf
    );
    let one = PinnedCluster::start(&bin, &[0], pin).await;
    one.load(opts, shards).await;
    eprintln!("scaling: 2 pinned workers (cores 0 and 1)");
    let two = PinnedCluster::start(&bin, &[0, 1], pin).await;
    two.load(opts, shards).await;
    let mut c1 = Client::connect(&one.coordinator().url()).await;
    let mut c2 = Client::connect(&two.coordinator().url()).await;

    println!();
    println!(
        "## Scaling: TPC-H SF {}, 1 worker vs 2 workers, each a `flight-worker` process with \
         1 DuckDB thread{}; {shards} shards in both; the coordinator and the client run \
         unpinned in the bench process",
        opts.sf,
        if pin {
            " pinned to its own core (taskset -c 0 / -c 1)"
        } else {
            " (NOT pinned: taskset missing)"
        }
    );
    println!();
    let mut table = Comparison::new("1 worker (ms)", "2 workers (ms)", "speedup", |a, b| a / b);
    for n in opts.queries() {
        let sql = tpch::query(n).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..=opts.runs {
            let t = Instant::now();
            c1.query(sql).await.unwrap_or_else(|e| panic!("Q{n}: {e}"));
            let e1 = t.elapsed();
            let t = Instant::now();
            c2.query(sql).await.unwrap_or_else(|e| panic!("Q{n}: {e}"));
            let e2 = t.elapsed();
            if i > 0 {
                a.push(e1);
                b.push(e2);
            }
        }
        table.row(n, a, b);
    }
    let speedup = table.total();
    one.shutdown().await;
    two.shutdown().await;
    speedup
}
