//! `cargo xtask bench --perf`: CPU profiles of the benchmarked processes,
//! one per phase, with Linux `perf`.
//!
//! Each phase gets its own `perf record` attached to the server and kubesim
//! (sampling the `cpu-clock` software event, which works on virtual machines
//! without hardware counters, with DWARF call graphs from the release
//! binaries' line tables). The recorder starts disabled and is enabled over
//! its control FIFO; the bench goes on only once perf acknowledged, so the
//! phase is recorded from its first request. At the end a text report of the
//! phase is written beside the data (`perf report --stdio`).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

/// How long perf may take to attach and acknowledge.
const ATTACH_DEADLINE: Duration = Duration::from_secs(30);

/// A running `perf record` of one phase. Dropped without
/// [`Recording::finish`] (an error in the phase), it kills perf.
pub(crate) struct Recording {
    child: Option<Child>,
    data: PathBuf,
    /// perf's stderr, for error messages.
    log: PathBuf,
    fifos: [PathBuf; 2],
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for fifo in &self.fifos {
            let _ = std::fs::remove_file(fifo);
        }
    }
}

/// Fails early, with the reason, when perf is missing or not allowed.
pub(crate) fn check_available() -> Result<()> {
    let out = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context(
            "--perf needs Linux perf on PATH (Debian: apt-get install linux-perf); \
             it could not be started",
        )?;
    if !out.status.success() {
        bail!(
            "--perf: `perf record` does not work here (perf_event_paranoid?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Starts recording `pids` into `<dir>/<phase>.data`; returns once perf
/// acknowledged that sampling is enabled.
pub(crate) async fn start(dir: &Path, phase: &str, pids: &[u32]) -> Result<Recording> {
    std::fs::create_dir_all(dir)?;
    let data = dir.join(format!("{phase}.data"));
    let ctl = dir.join(format!("{phase}.ctl"));
    let ack = dir.join(format!("{phase}.ack"));
    for fifo in [&ctl, &ack] {
        let _ = std::fs::remove_file(fifo);
        let status = Command::new("mkfifo").arg(fifo).status().context("mkfifo")?;
        if !status.success() {
            bail!("mkfifo {} failed", fifo.display());
        }
    }
    let pid_list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    // The SSE burst lasts ~10–50 ms: sample it more often to see anything.
    let freq = if phase == "sse" { "9973" } else { "997" };
    let log = dir.join(format!("{phase}.log"));
    let child = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", freq, "--call-graph", "dwarf,16384"])
        .args(["-D", "-1", "--control"])
        .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
        .args(["-p", &pid_list, "-o"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("start perf record")?;
    let mut rec = Recording { child: Some(child), data, log, fifos: [ctl.clone(), ack.clone()] };
    let end = Instant::now() + ATTACH_DEADLINE;
    // The control FIFO can be opened for writing once perf has it open.
    let mut tx = loop {
        match pipe::OpenOptions::new().open_sender(&ctl) {
            Ok(tx) => break tx,
            Err(e) => {
                rec.check_running(&format!("opening its control FIFO ({e})"))?;
                if Instant::now() > end {
                    bail!("perf record did not open its control FIFO in {ATTACH_DEADLINE:?}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let mut rx = pipe::OpenOptions::new().open_receiver(&ack)?;
    tx.write_all(b"enable\n").await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    // perf answers "ack\n" followed by a NUL byte.
    while !got.windows(4).any(|w| w == b"ack\n") {
        match tokio::time::timeout_at(end.into(), rx.read(&mut buf)).await {
            Ok(Ok(0)) => {
                // No writer (yet, or any more): perf may have given up.
                rec.check_running("waiting for its acknowledgement")?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("perf record did not acknowledge `enable` in {ATTACH_DEADLINE:?}"),
        }
    }
    Ok(rec)
}

impl Recording {
    /// An error with perf's own message if it has exited.
    fn check_running(&mut self, doing: &str) -> Result<()> {
        let Some(child) = self.child.as_mut() else { bail!("perf record is gone") };
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("perf record exited ({status}) while {doing}: {}", log.trim());
        }
        Ok(())
    }

    /// Stops recording (SIGINT: perf writes its data and exits) and writes
    /// `<phase>.txt`: the processes' self time by function.
    pub(crate) fn finish(mut self) -> Result<PathBuf> {
        let Some(mut child) = self.child.take() else { bail!("perf record is gone") };
        crate::bench::signal(child.id(), "INT")?;
        let status = child.wait()?;
        // perf re-raises the SIGINT once its data is written.
        if !status.success() && status.signal() != Some(2) {
            bail!("perf record ended with {status}");
        }
        let report = self.data.with_extension("txt");
        let out = Command::new("perf")
            .args(["report", "--no-children", "-g", "none", "--stdio", "--percent-limit", "0.3"])
            .args(["--sort", "comm,dso,sym", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .context("perf report")?;
        std::fs::write(&report, &out.stdout)?;
        Ok(report)
    }
}
