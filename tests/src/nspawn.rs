//! A Debian root booted with systemd in a `systemd-nspawn` container, driven from the test.
//!
//! The test machines run no systemd and no D-Bus, so the container is neither registered
//! with machined nor given a scope of its own (`--register=no --keep-unit`), and commands go
//! in with `nsenter -t LEADER -a` (LEADER: the container's init, the child of the nspawn
//! process) rather than `machinectl`. `SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1` with
//! `--system-call-filter=bpf` gives the container the unified cgroup hierarchy, which
//! `IPAddressDeny=` and the other BPF-based unit options need. The container has a network
//! namespace of its own with only loopback in it (`--private-network`).
//!
//! Dropping a [`Booted`] shuts the container down: SIGTERM to nspawn (systemd powers off),
//! then, if it is not gone within 20 s, SIGKILL to the container's init and to nspawn; mounts
//! left under the root are removed either way.

use crate::debroot::{output_within, unmount_under};
use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a clean shutdown may take before the container is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// A booted container.
#[derive(Debug)]
pub struct Booted {
    nspawn: Option<Child>,
    leader: u32,
    root: PathBuf,
    console: PathBuf,
}

/// The pid namespace of process `pid`, as the link /proc/PID/ns/pid reads.
fn pid_ns(pid: &str) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

impl Booted {
    /// Boots the root at `root` (its console output going to `console`) and waits until its
    /// systemd has found the container's init and `systemctl is-system-running --wait` says
    /// `running`, for at most `timeout`. Any other state is an error that lists the failed
    /// units; the container is shut down again on every error.
    pub fn boot(root: &Path, console: &Path, timeout: Duration) -> Result<Booted> {
        let log =
            fs::File::create(console).with_context(|| format!("creating {}", console.display()))?;
        // setpriv --pdeathsig: should the test die, nspawn gets SIGTERM and powers the
        // container off (a run after a SIGKILL also kills what is left: see
        // debroot::kill_containers_on).
        let child = Command::new("setpriv")
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .args([
                "--pdeathsig",
                "TERM",
                "--",
                "systemd-nspawn",
                "--boot",
                "--register=no",
                "--keep-unit",
                "--system-call-filter=bpf",
                "--private-network",
                "--console=read-only",
                "--timezone=off",
                "--resolv-conf=off",
            ])
            .arg("-D")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting systemd-nspawn --boot")?;
        let mut b = Booted {
            nspawn: Some(child),
            leader: 0,
            root: root.to_path_buf(),
            console: console.to_path_buf(),
        };
        let deadline = Instant::now() + timeout;
        b.leader = b.find_leader(deadline)?;
        // The init found may not have become systemd yet, or systemd not have set up its
        // bus or said it is the system manager (/run/systemd/system): until then systemctl
        // says "offline" or fails. --wait waits through "initializing" and "starting".
        let state = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out = b.exec_timeout(
                &["systemctl", "is-system-running", "--wait"],
                left.max(Duration::from_secs(1)),
            )?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if ["running", "degraded", "maintenance", "stopping"].contains(&state.as_str()) {
                break state;
            }
            let last = format!(
                "'{state}' ({}; {})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            if Instant::now() >= deadline {
                bail!(
                    "the container's systemd did not finish booting within {timeout:?}: \
                     systemctl is-system-running said {last}; console:\n{}",
                    b.console_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if state != "running" {
            let failed = b
                .exec(&["systemctl", "--failed", "--no-legend", "--plain"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            bail!(
                "the container booted into state '{state}', not 'running'; failed units:\n{failed}\nconsole:\n{}",
                b.console_tail()
            );
        }
        Ok(b)
    }

    /// The container's init: the child of nspawn living in another pid namespace.
    fn find_leader(&mut self, deadline: Instant) -> Result<u32> {
        let ours = pid_ns("self").context("reading /proc/self/ns/pid")?;
        let nspawn_pid = self
            .nspawn
            .as_ref()
            .map(Child::id)
            .context("nspawn is gone")?;
        loop {
            if let Some(status) = self.nspawn.as_mut().context("nspawn is gone")?.try_wait()? {
                bail!(
                    "systemd-nspawn exited with {status} before the container was up; console:\n{}",
                    self.console_tail()
                );
            }
            let tasks = fs::read_dir(format!("/proc/{nspawn_pid}/task"))?;
            for t in tasks {
                let children = fs::read_to_string(t?.path().join("children")).unwrap_or_default();
                for c in children.split_whitespace() {
                    if pid_ns(c).is_some_and(|ns| ns != ours) {
                        return c.parse().context("a pid that is not a number");
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "no container init under systemd-nspawn (pid {nspawn_pid}) in time; console:\n{}",
                    self.console_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The container's init, as the host sees it.
    pub fn leader(&self) -> u32 {
        self.leader
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The last lines of the container's console output.
    pub fn console_tail(&self) -> String {
        crate::procs::tail(&fs::read_to_string(&self.console).unwrap_or_default())
    }

    /// `argv` run inside the container (every namespace of its init, a clean environment),
    /// waited for at most `timeout`; its exit status is the caller's to judge.
    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        ensure!(self.leader != 0, "the container has no init");
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.leader.to_string())
            .args(["-a", "--", "/usr/bin/env", "-i"])
            .args([
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "SYSTEMD_COLORS=0",
                "SYSTEMD_PAGER=",
                "SYSTEMD_LESS=",
            ])
            .args(argv);
        output_within(&mut c, timeout)
    }

    /// [`Booted::exec_timeout`] with 60 s.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        self.exec_timeout(argv, Duration::from_secs(60))
    }

    /// `argv` run inside the container; fails with its output unless it exits 0, else returns
    /// its standard output.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let out = self.exec(argv)?;
        ensure!(
            out.status.success(),
            "`{}` in the container exited with {}:\n{}\n{}",
            argv.join(" "),
            out.status,
            crate::procs::tail(&String::from_utf8_lossy(&out.stdout)),
            crate::procs::tail(&String::from_utf8_lossy(&out.stderr))
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Powers the container off and waits for nspawn to end; kills it when that takes longer
    /// than 20 s. Fails if it had to kill, or if mounts are left under the root.
    pub fn shutdown(mut self) -> Result<()> {
        let clean = self.stop();
        unmount_under(&self.root)?;
        ensure!(
            clean,
            "the container did not power off within {SHUTDOWN_TIMEOUT:?} of SIGTERM (killed); console:\n{}",
            self.console_tail()
        );
        Ok(())
    }

    /// Stops the container; true if it went on SIGTERM alone.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.nspawn.take() else {
            return true;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        // nspawn turns SIGTERM into an orderly poweroff of the booted system.
        let pid = rustix::process::Pid::from_raw(child.id() as i32);
        if let Some(p) = pid {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The init of a pid namespace takes every process in it along when it dies.
        if let Some(p) = rustix::process::Pid::from_raw(self.leader as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        if self.nspawn.is_some() {
            if !self.stop() {
                eprintln!("nspawn: the container did not power off in time: killed");
            }
            if let Err(e) = unmount_under(&self.root) {
                eprintln!("nspawn: {e:#}");
            }
        }
    }
}
