//! Real servers for the pool tests and benchmarks, on free ports of 127.0.0.1: Redis
//! (`redis-server`, `redis-sentinel`) and PostgreSQL (a throwaway cluster: `initdb`
//! into a temporary directory and `pg_ctl start`, as the `postgres` user when running as
//! root, since PostgreSQL refuses root). Each is stopped and removed when dropped.
//! Included by the behaviour tests and by `benches/benches/pools.rs` (with `#[path]`).

#![allow(dead_code)] // each includer uses its part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A port free now that this process has not handed out before (nor its cluster-bus
/// twin, 10000 apart): a stopped server's port is never given to another test's server,
/// which a client still reconnecting to the stopped one would then reach.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let twins = [port, port.wrapping_add(10_000), port.wrapping_sub(10_000)];
        if port < 55_535 && !given.iter().any(|g| twins.contains(g)) {
            given.push(port);
            return port;
        }
    }
}

pub fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("resilience-redis-{}-{}", std::process::id(), N.fetch_add(1, SeqCst)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A `redis-server` (or `redis-sentinel`) process of the test's own.
pub struct Server {
    program: &'static str,
    args: Vec<String>,
    pub port: u16,
    child: Mutex<Option<Child>>,
}

impl Server {
    pub fn new(program: &'static str, port: u16, args: Vec<String>) -> Self {
        let server = Self { program, args, port, child: Mutex::new(None) };
        server.start();
        server
    }

    pub fn standalone() -> Self {
        let port = free_port();
        Self::new("redis-server", port, server_args(port, &[]))
    }

    pub fn start(&self) {
        let child = Command::new(self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {} (scripts/test installs redis-server and redis-sentinel): {e}", self.program)
            });
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while cli(self.port, &["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "{} on port {} did not answer PING", self.program, self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn server_args(port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `redis-cli -p port args…`, its trimmed output, `None` if it failed.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output =
        Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

/// The directory of `initdb` and `pg_ctl`: `$RESILIENCE_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("RESILIENCE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|d| d.ok()).map(|d| d.path().join("bin")).filter(|b| b.join("initdb").exists()).collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()?.parse::<u32>().ok()));
    versions.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL: install Debian's `postgresql` (scripts/test does) or set RESILIENCE_PG_BIN")
    })
}

/// Whether the tests run as root (`id -u`).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Runs a PostgreSQL tool, as `postgres` when we are root.
pub fn run_pg(tool: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    let bin = bin_dir().join(tool);
    if is_root() {
        Command::new("runuser").args(["-u", "postgres", "--"]).arg(&bin).args(args).output()
    } else {
        Command::new(&bin).args(args).output()
    }
}

/// Runs a PostgreSQL tool; panics with its output when it fails.
pub fn pg(tool: &str, args: &[&str]) {
    let output = run_pg(tool, args).unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(
        output.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Makes `dir` the `postgres` user's when we are root.
pub fn own(dir: &Path) {
    if is_root() {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir).status().expect("chown");
        assert!(status.success(), "chown {}", dir.display());
    }
}

/// A PostgreSQL server of a test's own.
pub struct PgServer {
    dir: PathBuf,
    pub port: u16,
}

impl PgServer {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("resilience-pg-{}-{}", std::process::id(), N.fetch_add(1, SeqCst)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster dir");
        own(&dir);
        pg("initdb", &["-D", dir.to_str().expect("path"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let server = Self { dir, port };
        server.start();
        server
    }

    pub fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        pg(
            "pg_ctl",
            &["-D", self.dir.to_str().expect("path"), "-o", &options, "-l", log.to_str().expect("path"), "-w", "start"],
        );
    }

    pub fn stop(&self) {
        pg("pg_ctl", &["-D", self.dir.to_str().expect("path"), "-m", "fast", "-w", "stop"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = run_pg("pg_ctl", &["-D", self.dir.to_str().unwrap_or(""), "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of `masters` masters with `replicas` replicas each, up and `ok`
/// (and every replica connected), in a scratch directory removed when dropped.
pub struct RedisCluster {
    pub servers: Vec<Server>,
    pub ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        let dir = scratch_dir();
        let ports: Vec<u16> = (0..masters * (1 + replicas)).map(|_| free_port()).collect();
        let servers = ports
            .iter()
            .map(|&p| {
                let nodes = dir.join(format!("nodes-{p}.conf")).to_string_lossy().into_owned();
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    nodes.as_str(),
                    "--cluster-node-timeout",
                    "1000",
                    // Without replicas, the slots of a lost master fail alone.
                    "--cluster-require-full-coverage",
                    if replicas == 0 { "no" } else { "yes" },
                    "--dir",
                    dir.to_str().expect("path"),
                ];
                Server::new("redis-server", p, server_args(p, &extra))
            })
            .collect();
        let cluster = Self { servers, ports, dir };
        let addresses = cluster.addresses();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        let replicas_arg = replicas.to_string();
        create.extend(["--cluster-replicas", replicas_arg.as_str(), "--cluster-yes"]);
        let made = Command::new("redis-cli").args(&create).output().expect("redis-cli runs");
        assert!(made.status.success(), "cluster create: {}", String::from_utf8_lossy(&made.stdout));
        let connected = |port: u16| {
            cli(port, &["CLUSTER", "NODES"]).is_some_and(|nodes| {
                nodes.lines().filter(|l| l.contains("slave") && l.contains("connected")).count() == masters * replicas
            })
        };
        // A bound, not an expectation: on two loaded cores six nodes can take a while.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster
            .ports
            .iter()
            .all(|p| cli(*p, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok")))
            || !connected(cluster.ports[0])
        {
            assert!(Instant::now() < deadline, "the cluster came up");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// `127.0.0.1:port` of every node.
    pub fn addresses(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
