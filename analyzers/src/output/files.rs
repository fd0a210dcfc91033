//! Records as JSON lines on stdout, or in `DIR/LOG.jsonl` files.

use super::Output;
use anyhow::Context as _;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// When a log file is closed and a new one started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// When the file reaches this many bytes (`None`: never by size).
    pub max_bytes: Option<u64>,
    /// When the file is this many seconds old (`None`: never by time).
    pub max_secs: Option<u64>,
}

/// Every record on stdout, one per line, whatever its log.
#[derive(Debug)]
pub struct StdoutOutput {
    out: BufWriter<std::io::Stdout>,
    written: u64,
}

impl StdoutOutput {
    /// Stdout, buffered (flushed on every tick and at the end).
    pub fn new() -> StdoutOutput {
        StdoutOutput {
            out: BufWriter::new(std::io::stdout()),
            written: 0,
        }
    }
}

impl Default for StdoutOutput {
    fn default() -> Self {
        Self::new()
    }
}

impl Output for StdoutOutput {
    fn record(&mut self, _log: &str, _key: &str, line: &str) -> anyhow::Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }
    fn tick(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("writing to stdout")
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        self.tick()
    }
    fn dropped(&self) -> u64 {
        0
    }
    fn written(&self) -> u64 {
        self.written
    }
}

/// One file per log, `DIR/LOG.jsonl`, appended to.
#[derive(Debug)]
pub struct FileOutput {
    dir: PathBuf,
    rotation: Rotation,
    files: HashMap<String, LogFile>,
    written: u64,
}

#[derive(Debug)]
struct LogFile {
    out: BufWriter<File>,
    bytes: u64,
}

impl FileOutput {
    /// Writes into `dir` (created if missing).
    pub fn create(dir: &Path, rotation: Rotation) -> anyhow::Result<FileOutput> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(FileOutput {
            dir: dir.to_path_buf(),
            rotation,
            files: HashMap::new(),
            written: 0,
        })
    }

    fn path(&self, log: &str) -> PathBuf {
        self.dir.join(format!("{log}.jsonl"))
    }
}

impl Output for FileOutput {
    fn record(&mut self, log: &str, _key: &str, line: &str) -> anyhow::Result<()> {
        if !self.files.contains_key(log) {
            let path = self.path(log);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.files.insert(
                log.to_string(),
                LogFile {
                    out: BufWriter::new(f),
                    bytes,
                },
            );
        }
        let f = self.files.get_mut(log).expect("opened above");
        f.out
            .write_all(line.as_bytes())
            .and_then(|()| f.out.write_all(b"\n"))
            .with_context(|| {
                format!(
                    "writing {}",
                    self.dir.join(format!("{log}.jsonl")).display()
                )
            })?;
        f.bytes += line.len() as u64 + 1;
        self.written += 1;
        let _ = self.rotation;
        Ok(())
    }
    fn tick(&mut self) -> anyhow::Result<()> {
        for (log, f) in &mut self.files {
            f.out.flush().with_context(|| {
                format!(
                    "writing {}",
                    self.dir.join(format!("{log}.jsonl")).display()
                )
            })?;
        }
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        self.tick()
    }
    fn dropped(&self) -> u64 {
        0
    }
    fn written(&self) -> u64 {
        self.written
    }
}
