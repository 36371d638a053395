//! A real `redis-server` for tests: a child process on a Unix socket in a temporary directory,
//! stopped by its PID when dropped.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting `redis-server` may take to answer `PING`.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A `redis-server` child process listening on a Unix socket only (no TCP port), with its data
/// in a temporary directory. Dropping it kills the process.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    append_only: bool,
    /// With TLS: the TCP port of the TLS listener, the certificate and the key.
    tls: Option<(u16, PathBuf, PathBuf)>,
}

impl RedisServer {
    /// Whether tests that need `redis-server` can run here. Without it, `cargo test` skips
    /// them with a note, so that it keeps working on a machine without Redis; with
    /// `RTM_REQUIRE_REDIS=1` (as `scripts/test` sets, after installing it) a missing
    /// `redis-server` fails them instead.
    pub fn available() -> bool {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var("RTM_REQUIRE_REDIS").as_deref() != Ok("1"),
                "redis-server is not installed, and RTM_REQUIRE_REDIS=1 asks for it"
            );
            eprintln!(
                "skipped: redis-server is not installed (Debian: apt-get install redis-server)"
            );
        }
        found
    }

    /// Starts a server without persistence.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a server that writes every command to its append-only file before answering it
    /// (`appendfsync always`), so that a restart keeps everything acknowledged.
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    fn start_with(append_only: bool) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        let mut server = Self {
            child: None,
            dir,
            append_only,
            tls: None,
        };
        server.spawn();
        server
    }

    /// Starts a server without persistence that also listens for TLS on a loopback port
    /// ([`RedisServer::tls_url`]), presenting `cert` and `key` (PEM); clients need no
    /// certificate of their own.
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        let mut server = Self {
            child: None,
            dir,
            append_only: false,
            tls: None,
        };
        // redis-server cannot be asked for a port of its own choosing: take a free one, and
        // try again if another process took it in between.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            server.tls = Some((port, cert.to_owned(), key.to_owned()));
            if server.try_spawn().is_ok() {
                return server;
            }
        }
        panic!("redis-server with TLS did not start on any of 5 free ports");
    }

    /// The `rediss://` URL of the TLS listener (by the name `localhost`), when there is one.
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _, _)| format!("rediss://localhost:{port}/"))
    }

    /// The path of the server's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The URL a client connects with (`redis+unix://...`).
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// The PID of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--loglevel")
            .arg("warning")
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        if self.append_only {
            command
                .arg("--appendonly")
                .arg("yes")
                .arg("--appendfsync")
                .arg("always");
        } else {
            command.arg("--appendonly").arg("no");
        }
        if let Some((port, cert, key)) = &self.tls {
            command
                .arg("--tls-port")
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(cert)
                .arg("--tls-auth-clients")
                .arg("no");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install it (Debian: apt-get install \
                     redis-server); scripts/test does"
                )
            });
        self.child = Some(child);
        self.wait_ready(&socket)
    }

    /// Waits for `PING` to be answered; an error if the server exited first.
    fn wait_ready(&mut self, socket: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if ping(socket) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                return Err(format!("redis-server exited at start ({status}): {log}"));
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on {} within {START_DEADLINE:?}",
                socket.display()
            );
            // A child process's start has no event to wait on: poll its socket.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server at once (SIGKILL: no shutdown, no final save), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same socket and data directory (with an
    /// append-only file, what it acknowledged is still there).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a server answers `PING` on `socket`.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_is_gone_after_drop() {
        let server = RedisServer::start();
        let socket = server.socket();
        let pid = server.pid().expect("running");
        assert!(ping(&socket));
        drop(server);
        assert!(!ping(&socket));
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "redis-server {pid} still runs"
        );
    }
}
