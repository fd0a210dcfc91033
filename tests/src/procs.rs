//! Child processes for the multi-process tests: a guard that kills its child unless it was
//! waited for, output to files (never pipes, so a chatty child cannot block), deadlines on
//! every wait, and small helpers to read what a child said.

use anyhow::{bail, ensure, Context, Result};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process whose output goes to files in a scratch directory (never pipes, so a chatty
/// child cannot block); killed when dropped unless it was waited for.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with stdin from /dev/null and stdout and stderr to `dir/NAME.stdout` and
    /// `dir/NAME.stderr`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Proc> {
        let out = dir.join(format!("{name}.stdout"));
        let err = dir.join(format!("{name}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            out,
            err,
            status: None,
        })
    }

    /// As [`Proc::spawn`], but with stdin a pipe whose writing end is returned (dropping it
    /// closes the child's input).
    pub fn spawn_with_stdin(
        name: &str,
        mut cmd: Command,
        dir: &Path,
    ) -> Result<(Proc, std::process::ChildStdin)> {
        let out = dir.join(format!("{name}.stdout"));
        let err = dir.join(format!("{name}.stderr"));
        cmd.stdin(Stdio::piped())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        Ok((
            Proc {
                name: name.to_string(),
                child,
                out,
                err,
                status: None,
            },
            stdin,
        ))
    }

    /// The name it was started under (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn poll(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits until `deadline`; past it, kills the process and fails with its stderr.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<ExitStatus> {
        let mut nap = Duration::from_millis(1);
        loop {
            if let Some(s) = self.poll()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                self.status = Some(self.child.wait()?);
                bail!(
                    "{} did not exit in time (killed); stderr:\n{}",
                    self.name,
                    tail(&self.stderr())
                );
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }

    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.wait_until(Instant::now() + timeout)
    }

    pub fn signal(&self, sig: rustix::process::Signal) -> Result<()> {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).context("pid 0")?;
        rustix::process::kill_process(pid, sig)
            .with_context(|| format!("signalling {} (pid {})", self.name, self.pid()))
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.err).unwrap_or_default()).into_owned()
    }

    /// Fails unless the process exited with `code`, showing its stderr.
    pub fn expect_code(&mut self, code: i32, timeout: Duration) -> Result<()> {
        let s = self.wait(timeout)?;
        ensure!(
            s.code() == Some(code),
            "{} exited with {s}, expected {code}; stderr:\n{}",
            self.name,
            tail(&self.stderr())
        );
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            // SIGKILL ends a stopped process too.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `key=` in the `mos-sensor: stats ...` line of a sensor's stderr.
pub fn sensor_stat(stderr: &str, key: &str) -> Result<u64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("mos-sensor: stats "))
        .with_context(|| format!("no stats line in:\n{stderr}"))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key}= in {line}"))
}

/// The last 40 lines of `text`, or `(empty)`.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    let t = lines[from..].join("\n");
    if t.trim().is_empty() {
        "(empty)".into()
    } else {
        t
    }
}

/// `program args...` as a [`Command`], arguments of mixed types, with no default configuration
/// file for a sensor (`MOS_SENSOR_CONFIG` empty).
pub fn cmd(program: &Path, args: &[&dyn AsRef<OsStr>]) -> Command {
    let mut c = Command::new(program);
    // A sensor started by a test reads no configuration file but the one the test gives.
    c.env("MOS_SENSOR_CONFIG", "");
    for a in args {
        c.arg(a.as_ref());
    }
    c
}

/// Polls `cond` every 10 ms until it holds; fails after `timeout`.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `sensor` has created its control socket at `control`; fails if the sensor
/// exits first or after `timeout`.
pub fn wait_for_socket(sensor: &mut Proc, control: &Path, timeout: Duration) -> Result<()> {
    wait_for(
        &format!("the control socket {}", control.display()),
        timeout,
        || {
            if let Some(st) = sensor.poll()? {
                bail!(
                    "{} exited with {st} before creating its socket; stderr:\n{}",
                    sensor.name(),
                    tail(&sensor.stderr())
                );
            }
            Ok(std::fs::symlink_metadata(control).is_ok_and(|m| m.file_type().is_socket()))
        },
    )
}

/// Fails if the process's stderr tells of a panic.
pub fn assert_no_panic(p: &Proc) -> Result<()> {
    let err = p.stderr();
    ensure!(!err.contains("panicked"), "{} panicked:\n{err}", p.name);
    Ok(())
}

/// Fails unless stderr is one line containing every one of `words`, without a panic.
pub fn assert_one_line(p: &Proc, words: &[&str]) -> Result<()> {
    let err = p.stderr();
    ensure!(
        err.trim_end().lines().count() == 1,
        "{}: expected one line on stderr, got:\n{err}",
        p.name
    );
    for w in words {
        ensure!(err.contains(w), "{}: no {w:?} in {err}", p.name);
    }
    assert_no_panic(p)
}

/// Opens `dir` to other users (mode 0755) and checks they can reach it: every directory above
/// it must be searchable by others, or the test names the one that is not. For tests that run
/// a process as another user (uid 65534) against a socket in `dir`.
pub fn open_to_other_users(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for d in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(d)?.mode();
        ensure!(
            mode & 0o001 != 0,
            "{} (mode {mode:o}) is not searchable by other users: set TMPDIR elsewhere",
            d.display()
        );
    }
    Ok(())
}

/// A copy of `exe` in `dir` that any user may run (the build directory may be closed to them).
pub fn copy_for_other_users(exe: &Path, dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let name = exe.file_name().context("no file name")?;
    let copy = dir.join(name);
    std::fs::copy(exe, &copy).with_context(|| format!("copying {}", exe.display()))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok(copy)
}
