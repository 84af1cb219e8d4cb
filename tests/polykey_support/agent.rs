//! A real Polykey agent process for a test: a fresh node path in a temporary directory, a free
//! loopback port, killed when dropped.
//!
//! The agent is the one `.ci/run` builds into `target/polykey-agent` with
//! `../shared/polykey-agent/build.sh`, started with that directory's `start-agent.js`.

use std::io::{BufRead as _, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

/// The password every test agent is created with.
pub const PASSWORD: &str = "correct horse battery staple";

/// How long an agent may take to print `READY`. A fresh start with a 2048-bit root key takes
/// 3-5 s; two cores shared by parallel tests and other work can make it many times that, and
/// the bound is only there so that a wedged agent fails the test instead of hanging it.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// ring verifies RSA signatures from 2048-bit keys up; the start script's default (1024) would
/// make every TLS handshake fail.
const ROOT_KEY_BITS: &str = "2048";

/// The built agent, `target/polykey-agent` (with its `polykey/dist`).
pub fn agent_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/polykey-agent")
}

/// `start-agent.js` beside `build.sh`, in the `shared/` directory next to the checkout.
pub fn start_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/polykey-agent/start-agent.js")
}

/// Whether the agent is built and can be started; for tests that are a no-op without it.
pub fn is_built() -> bool {
    agent_dir().join("polykey/.built").is_file() && start_script().is_file()
}

/// Builds the agent with `build.sh` if it is not built yet (about a minute, once: node and npm,
/// its dependencies from the npm registry), then panics, saying how to build it by hand, unless
/// it is built.
pub fn require_built() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_if_missing);
    assert!(
        agent_dir().join("polykey/.built").is_file(),
        "the Polykey agent is not built in {}: run .ci/run, or \
         ../shared/polykey-agent/build.sh target/polykey-agent (needs node and npm)",
        agent_dir().display()
    );
    assert!(
        start_script().is_file(),
        "{} is missing: the tests expect shared/ beside the checkout",
        start_script().display()
    );
}

/// A running agent. Dropping it kills the process and removes its node path.
pub struct PolykeyAgent {
    child: Child,
    /// The client service's address (always on loopback).
    pub address: SocketAddr,
    /// The agent's node id, as printed by the start script.
    pub node_id: String,
    /// The agent's TLS certificate (PEM), to pin.
    pub cert: PathBuf,
    /// The agent's node path (Polykey's state directory).
    pub node_path: PathBuf,
    /// What the agent wrote to stderr so far (its warnings), for failure messages.
    pub stderr: Arc<Mutex<String>>,
    /// Holds `node_path` and a spare `client` directory; removed on drop, after the kill.
    dir: tempfile::TempDir,
}

impl PolykeyAgent {
    /// Starts an agent with [`PASSWORD`] on a fresh node path and waits (up to
    /// [`START_TIMEOUT`]) until it listens. Blocks the thread: call it before the test's first
    /// `await`, or from `spawn_blocking`.
    pub fn start() -> Self {
        Self::start_with_password(PASSWORD)
    }

    /// [`start`](Self::start) with another password.
    pub fn start_with_password(password: &str) -> Self {
        require_built();
        let dir = tempfile::tempdir().unwrap();
        let node_path = dir.path().join("node");
        let mut child = Command::new("node")
            .arg(start_script())
            .arg(agent_dir())
            .arg(&node_path)
            .arg(password)
            .env("PK_FRESH", "1")
            .env("PK_ROOT_KEY_BITS", ROOT_KEY_BITS)
            .env("PK_CLIENT_PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting `node` for the Polykey agent: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().unwrap(), stderr.clone());
        let (ready, ready_line) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if line.starts_with("READY ") {
                    let _ = ready.send(line);
                    break;
                }
            }
            // Keep reading so the agent never blocks on a full pipe.
            for _ in lines {}
        });
        let started = Instant::now();
        let line = match ready_line.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the Polykey agent did not print READY ({why:?} after {:?}); its stderr:\n{}",
                    started.elapsed(),
                    stderr.lock().unwrap()
                );
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {name}= in the agent's line {line:?}"))
                .to_owned()
        };
        let port: u16 = field("port").parse().unwrap();
        Self {
            child,
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            node_id: field("nodeId"),
            cert: PathBuf::from(field("cert")),
            node_path,
            stderr,
            dir,
        }
    }

    /// A fresh TLS channel to the agent, pinned to its certificate.
    pub async fn channel(&self) -> Channel {
        super::tls::connect(self.address, &self.cert).await.unwrap()
    }

    /// A directory for the client's side (a session file, a CLI's node path), removed with the
    /// agent.
    pub fn client_dir(&self) -> PathBuf {
        let path = self.dir.path().join("client");
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for PolykeyAgent {
    fn drop(&mut self) {
        // SIGKILL: the node path is thrown away with the directory, so nothing needs the
        // agent's orderly stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects `from` into `into` on a thread, so the agent never blocks writing its warnings.
fn drain(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut text) = into.lock() {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
}

/// Runs `build.sh` when the agent is missing and the script is there, one build at a time
/// across test binaries (a lock file beside the build).
fn build_if_missing() {
    let script = start_script().with_file_name("build.sh");
    if agent_dir().join("polykey/.built").is_file() || !script.is_file() {
        return;
    }
    std::fs::create_dir_all(agent_dir()).unwrap();
    let lock = std::fs::File::create(agent_dir().with_extension("lock")).unwrap();
    // Another test binary building it holds the lock for a minute or two: wait for it, up to a
    // bound that only a wedged build reaches.
    let started = Instant::now();
    while lock.try_lock().is_err() {
        assert!(
            started.elapsed() < BUILD_TIMEOUT,
            "another build of the Polykey agent held its lock for {BUILD_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    if agent_dir().join("polykey/.built").is_file() {
        return;
    }
    eprintln!(
        "building the Polykey agent into {} …",
        agent_dir().display()
    );
    let status = Command::new("bash")
        .arg(&script)
        .arg(agent_dir())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "{} failed ({status}): it needs node and npm, and the npm registry",
        script.display()
    );
}

/// How long a build of the agent may hold its lock before another test gives up on it.
const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
