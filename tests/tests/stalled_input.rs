//! `mos-sensor` on an input that stalls: a FIFO or a pipe whose writer keeps it open and sends
//! nothing more, or a FIFO no writer ever opened. One SIGTERM ends such an input as the end of
//! the file would: every connection ends, `--dump` and the attached analyzers write what was
//! read, and the sensor exits with the stop status, 130. Needs the release binaries
//! (`cargo build --release --bins`) and Linux (the tests read a thread's state in /proc).

use anyhow::{ensure, Context, Result};
use mos_tests::dumps::same_tree;
use mos_tests::locate::{bin, corpus_dir, sensor_bin};
use mos_tests::procs::{assert_no_panic, cmd, tail, wait_for, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use rustix::process::Signal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);
/// How long the sensor may take from SIGTERM to its exit: "within a few seconds".
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// A capture of 93 connections, 19 of them still open halfway through.
const CAPTURE: &str = "ndpi__alexa-app.pcap";

fn mkfifo(path: &Path) -> Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .with_context(|| format!("mkfifo {}", path.display()))
}

/// The state letter (`R`, `S`, `D`, ...) of `pid`'s main thread.
fn main_thread_state(pid: u32) -> Result<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))?;
    // The name in parentheses may hold spaces: the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .context("no state in /proc stat")
}

/// Waits until the sensor reads nothing more from a writer that went quiet: the pipe holds no
/// byte, and the sensor's main thread sleeps, three looks in a row (it sleeps only waiting for
/// more bytes, so the frames it had read are all processed by then).
fn wait_until_stalled(sensor: &mut Proc, pipe: &impl std::os::fd::AsFd) -> Result<()> {
    let mut quiet = 0;
    wait_for("the sensor to wait on its quiet input", TIMEOUT, || {
        ensure!(
            sensor.poll()?.is_none(),
            "the sensor exited early:\n{}",
            tail(&sensor.stderr())
        );
        let unread = rustix::io::ioctl_fionread(pipe)?;
        if unread == 0 && main_thread_state(sensor.pid())? == 'S' {
            quiet += 1;
        } else {
            quiet = 0;
        }
        Ok(quiet >= 3)
    })
}

/// Sends SIGTERM and checks the sensor's normal stop: status 130 within [`STOP_WITHIN`], its
/// stop lines, and (with `--dump`) a summary of what it wrote.
fn stop_it(sensor: &mut Proc) -> Result<String> {
    sensor.signal(Signal::TERM)?;
    let sent = Instant::now();
    let st = sensor.wait(STOP_WITHIN)?;
    let err = sensor.stderr();
    ensure!(st.code() == Some(130), "exited with {st}:\n{}", tail(&err));
    ensure!(
        sent.elapsed() <= STOP_WITHIN,
        "took {:?} to stop after SIGTERM:\n{}",
        sent.elapsed(),
        tail(&err)
    );
    for line in [
        "SIGTERM: stopping",
        "stopped by a signal",
        "connections written to",
    ] {
        ensure!(err.contains(line), "no {line:?} in:\n{}", tail(&err));
    }
    ensure!(!err.contains("again: exiting at once"), "{}", tail(&err));
    ensure!(!err.contains("truncated at byte offset"), "{}", tail(&err));
    assert_no_panic(sensor)?;
    Ok(err)
}

/// What the sensor writes for `part` as a file: a capture cut there (inside a record, so it
/// exits 2, having written everything before the cut). With as many workers (they number the
/// connections, and so name the stream files).
fn reference(work: &Path, part: &[u8], workers: &str) -> Result<PathBuf> {
    let cut = work.join("cut.pcap");
    std::fs::write(&cut, part)?;
    let dir = work.join("reference");
    let mut s = Proc::spawn(
        "reference",
        cmd(
            &sensor_bin()?,
            &[
                &"--no-publish",
                &"--pcap",
                &cut,
                &"--dump",
                &dir,
                &"--workers",
                &workers,
            ],
        ),
        work,
    )?;
    s.expect_code(2, TIMEOUT)?;
    Ok(dir)
}

/// Where the stalled capture comes from.
#[derive(Clone, Copy, Debug)]
enum Feed {
    /// A FIFO the sensor opens (`--pcap PATH`).
    Fifo,
    /// Its standard input, a pipe (`--pcap -`).
    Stdin,
}

/// Feeds the first half of [`CAPTURE`] to a sensor, keeps the input open and quiet, and stops
/// the sensor with SIGTERM: its `--dump` (and, with `analyzer`, `mos-dump`'s) must be the
/// reference's.
fn stalled(feed: Feed, workers: &str, analyzer: bool) -> Result<()> {
    let work = ScratchDir::new(&format!("stalled-{feed:?}-{workers}-{analyzer}"))?;
    let w = work.path();
    let whole = std::fs::read(corpus_dir()?.join("pcaps").join(CAPTURE))?;
    let part = &whole[..whole.len() / 2];
    let want = reference(w, part, workers)?;
    let (dump, out, control) = (w.join("dump"), w.join("out"), w.join("c.sock"));
    let input: PathBuf = match feed {
        Feed::Fifo => {
            let fifo = w.join("in.fifo");
            mkfifo(&fifo)?;
            fifo
        }
        Feed::Stdin => "-".into(),
    };
    let mut c = cmd(
        &sensor_bin()?,
        &[&"--pcap", &input, &"--dump", &dump, &"--workers", &workers],
    );
    if analyzer {
        c.args(["--wait-analyzers", "1", "--control"]).arg(&control);
    } else {
        c.arg("--no-publish");
    }
    let (mut sensor, mut writer): (Proc, Box<dyn WriteFd + Send>) = match feed {
        Feed::Fifo => {
            let s = Proc::spawn("sensor", c, w)?;
            // Opening the writing end waits for the sensor to open the reading end.
            let f = std::fs::OpenOptions::new().write(true).open(&input)?;
            (s, Box::new(f))
        }
        Feed::Stdin => {
            let (s, stdin) = Proc::spawn_with_stdin("sensor", c, w)?;
            (s, Box::new(stdin))
        }
    };
    // Written from a thread: the sensor reads the file header before it makes its control
    // socket, and the rest only once the analyzer is there.
    let bytes = part.to_vec();
    let feeding = std::thread::spawn(move || -> std::io::Result<Box<dyn WriteFd + Send>> {
        writer.write_all(&bytes)?;
        writer.flush()?;
        Ok(writer)
    });
    let mut dumper = None;
    if analyzer {
        wait_for_socket(&mut sensor, &control, TIMEOUT)?;
        dumper = Some(Proc::spawn(
            "mos-dump",
            cmd(&bin("mos-dump")?, &[&"--control", &control, &"--out", &out]),
            w,
        )?);
    }
    let writer = feeding
        .join()
        .map_err(|_| anyhow::anyhow!("the feeding thread panicked"))??;
    wait_until_stalled(&mut sensor, &writer.fd())?;
    stop_it(&mut sensor)?;
    // The writer is still there, quiet, until the sensor has gone.
    drop(writer);
    same_tree(&want, &dump)?;
    if let Some(mut d) = dumper {
        let st = d.wait(TIMEOUT)?;
        ensure!(st.success(), "mos-dump exited with {st}:\n{}", d.stderr());
        same_tree(&want, &out)?;
    }
    Ok(())
}

/// A writing end the test holds open.
trait WriteFd: Write {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl<T: Write + std::os::fd::AsFd> WriteFd for T {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.as_fd()
    }
}

#[test]
fn sigterm_ends_a_stalled_fifo_as_the_end_of_the_capture() -> Result<()> {
    stalled(Feed::Fifo, "1", false)
}

#[test]
fn sigterm_ends_a_stalled_fifo_read_by_two_workers() -> Result<()> {
    stalled(Feed::Fifo, "2", false)
}

#[test]
fn sigterm_ends_a_stalled_standard_input() -> Result<()> {
    stalled(Feed::Stdin, "1", false)
}

#[test]
fn sigterm_on_a_stalled_fifo_lets_an_attached_analyzer_write_what_it_got() -> Result<()> {
    stalled(Feed::Fifo, "1", true)
}

/// A FIFO nobody opens for writing: the sensor waits for a writer, and SIGTERM stops it the
/// usual way, with an empty dump (not the default action's status 143).
#[test]
fn sigterm_while_a_fifo_waits_for_its_writer_is_the_normal_stop() -> Result<()> {
    let work = ScratchDir::new("stalled-no-writer")?;
    let w = work.path();
    let fifo = w.join("in.fifo");
    mkfifo(&fifo)?;
    let dump = w.join("dump");
    let mut sensor = Proc::spawn(
        "sensor",
        cmd(
            &sensor_bin()?,
            &[&"--no-publish", &"--pcap", &fifo, &"--dump", &dump],
        ),
        w,
    )?;
    wait_for("the sensor to wait for a writer", TIMEOUT, || {
        ensure!(
            sensor.poll()?.is_none(),
            "the sensor exited early:\n{}",
            tail(&sensor.stderr())
        );
        Ok(main_thread_state(sensor.pid())? == 'S')
    })?;
    let err = stop_it(&mut sensor)?;
    ensure!(err.contains(" 0 frames ("), "{}", tail(&err));
    let flows = std::fs::read_to_string(dump.join("flows.jsonl"))?;
    ensure!(flows.is_empty(), "{flows}");
    Ok(())
}
