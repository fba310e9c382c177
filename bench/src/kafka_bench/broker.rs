//! Start an Odradek broker for the run: the `odradek` binary next to this one
//! (or `--broker-bin`), a fresh data directory, a free loopback port; stopped
//! with SIGTERM at the end.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proto::Result;

pub struct Broker {
    child: Child,
    pub addr: String,
    /// Where its Prometheus metrics are served.
    pub metrics_addr: String,
    pub data: Option<tempfile::TempDir>,
    pub log_path: PathBuf,
    pub pid: u32,
}

pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or("no exe dir")?;
    for cand in [dir.join("odradek"), dir.join("../odradek")] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(format!(
        "no `odradek` binary next to {} (build it: cargo build --release -p odradek, or pass --broker-bin)",
        exe.display()
    )
    .into())
}

/// A free port for a broker we start, taken below the kernel's ephemeral
/// range: a port from bind(0) is free only until someone else's bind(0) or
/// outgoing connection gets it too, and then our connect-until-it-listens
/// loop would find *their* listener (in CI it found a parallel test's sink).
pub fn free_port() -> Result<u16> {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let top = if lo > 11_000 { lo } else { 32_768 };
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 32;
    for _ in 0..1000 {
        // xorshift: spread attempts over the range.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 10_000 + (x % u64::from(top - 10_000)) as u16;
        if (lo..=hi).contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    // Fall back to the kernel's choice.
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Broker {
    pub fn start(
        bin: &Path,
        data_parent: &Path,
        shards: Option<usize>,
        sets: &[String],
    ) -> Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("odradek-bench-data-")
            .tempdir_in(data_parent)
            .map_err(|e| format!("temp dir in {}: {e}", data_parent.display()))?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let metrics_addr = format!("127.0.0.1:{}", free_port()?);
        let log_path = data.path().with_extension("broker.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listeners")
            .arg(&addr)
            .arg("--advertised-listeners")
            .arg(&addr)
            .arg("--log-dirs")
            .arg(data.path().join("logs"))
            .arg("--metrics-listener")
            .arg(&metrics_addr)
            .arg("--log-level")
            .arg("warn");
        if let Some(n) = shards {
            cmd.arg("--shards").arg(n.to_string());
        }
        for s in sets {
            cmd.arg("--set").arg(s);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Alive first: a broker that could not bind exits, and whatever
            // else listens there is not it.
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("broker exited ({status}) before listening:\n{log}").into());
            }
            if std::net::TcpStream::connect(&addr).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("broker did not listen within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            addr,
            metrics_addr,
            data: Some(data),
            log_path,
            pid,
        })
    }

    /// SIGTERM, wait up to 60 s (it flushes every partition), then SIGKILL.
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log_path);
        drop(self.data.take());
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(format!("broker exited with {s}:\n{log}").into()),
            None => Err(format!("broker did not stop within 60 s of SIGTERM:\n{log}").into()),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data.as_ref().unwrap().path()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.data.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// User + system CPU seconds of a process so far (from /proc).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}
