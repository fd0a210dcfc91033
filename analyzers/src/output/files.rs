//! Records as JSON lines on stdout, or in `DIR/LOG.jsonl` files.

use super::Output;
use anyhow::Context as _;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// One file per log, `DIR/LOG.jsonl`, appended to; with a [`Rotation`], a full or old file is
/// renamed to `DIR/LOG.YYYYMMDD-HHMMSS.jsonl` (UTC, when it was rotated; `.N` before
/// `.jsonl` when that name is taken) and the next record starts a new `LOG.jsonl`.
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
    /// When this process opened it (a file's age for rotation by time).
    opened: Instant,
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

    /// Closes `log`'s file and renames it for the time `now`; the next record opens a new one.
    fn rotate(&mut self, log: &str, now: SystemTime) -> anyhow::Result<()> {
        let Some(mut f) = self.files.remove(log) else {
            return Ok(());
        };
        let path = self.path(log);
        f.out
            .flush()
            .with_context(|| format!("writing {}", path.display()))?;
        drop(f);
        let stamp = stamp(now);
        let mut n = 0u32;
        let target = loop {
            let name = if n == 0 {
                format!("{log}.{stamp}.jsonl")
            } else {
                format!("{log}.{stamp}.{n}.jsonl")
            };
            let t = self.dir.join(name);
            if !t.exists() {
                break t;
            }
            n += 1;
        };
        std::fs::rename(&path, &target)
            .with_context(|| format!("renaming {} to {}", path.display(), target.display()))
    }
}

/// `YYYYMMDD-HHMMSS` (UTC) of `t`.
fn stamp(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    // "YYYY-MM-DD hh:mm:ss UTC", digits only.
    let digits: String = shm_layout::status::utc_time(ms)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("{}-{}", &digits[..8], &digits[8..])
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
                    opened: Instant::now(),
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
        if self.rotation.max_bytes.is_some_and(|max| f.bytes >= max) {
            self.rotate(log, SystemTime::now())?;
        }
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
        if let Some(secs) = self.rotation.max_secs {
            let old: Vec<String> = self
                .files
                .iter()
                .filter(|(_, f)| f.bytes > 0 && f.opened.elapsed().as_secs() >= secs)
                .map(|(log, _)| log.clone())
                .collect();
            let now = SystemTime::now();
            for log in old {
                self.rotate(&log, now)?;
            }
        }
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
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
    fn dropped(&self) -> u64 {
        0
    }
    fn written(&self) -> u64 {
        self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_stamp_is_utc_date_and_time() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400 + 3600 + 62);
        assert_eq!(stamp(t), "20000229-010102");
    }

    #[test]
    fn a_full_file_is_renamed_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap();
        // Each line is 10 bytes with its newline: a 25-byte file takes three.
        let mut o = FileOutput::create(
            dir.path(),
            Rotation {
                max_bytes: Some(25),
                max_secs: None,
            },
        )
        .unwrap();
        for i in 0..7 {
            o.record("conn", "C1", &format!("{{\"n\":{i:03}}}"))
                .unwrap();
        }
        o.record("http", "C1", "{\"h\":1}").unwrap();
        o.finish().unwrap();
        let all = names(dir.path());
        // Two rotated conn files (within the same second the second one gets ".1"), the
        // current one with the 7th line, and http.jsonl.
        assert_eq!(all.len(), 4, "{all:?}");
        assert!(all.contains(&"conn.jsonl".to_string()), "{all:?}");
        assert!(all.contains(&"http.jsonl".to_string()), "{all:?}");
        let rotated: Vec<&String> = all
            .iter()
            .filter(|n| n.starts_with("conn.") && *n != "conn.jsonl")
            .collect();
        assert_eq!(rotated.len(), 2, "{all:?}");
        for r in &rotated {
            // conn.YYYYMMDD-HHMMSS[.N].jsonl
            let mid = r
                .strip_prefix("conn.")
                .and_then(|m| m.strip_suffix(".jsonl"))
                .unwrap();
            let (stamp, n) = mid.split_once('.').unwrap_or((mid, ""));
            assert_eq!(stamp.len(), 15, "{r}");
            assert_eq!(&stamp[8..9], "-", "{r}");
            assert!(n.is_empty() || n.parse::<u32>().is_ok(), "{r}");
        }
        let mut got: Vec<String> = Vec::new();
        for n in &all {
            if n.starts_with("conn.") {
                let l = lines(&dir.path().join(n));
                assert!(
                    l.len() == 3 || (n == "conn.jsonl" && l.len() == 1),
                    "{n}: {l:?}"
                );
                got.extend(l);
            }
        }
        got.sort();
        let want: Vec<String> = (0..7).map(|i| format!("{{\"n\":{i:03}}}")).collect();
        assert_eq!(got, want);
        assert_eq!(o.written(), 8);
    }

    #[test]
    fn an_old_file_is_rotated_on_a_tick() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = FileOutput::create(
            dir.path(),
            Rotation {
                max_bytes: None,
                max_secs: Some(1),
            },
        )
        .unwrap();
        o.record("ssh", "C2", "{\"a\":1}").unwrap();
        o.tick().unwrap();
        assert_eq!(names(dir.path()), ["ssh.jsonl"]);
        // Age the file past a second without waiting.
        let f = o.files.get_mut("ssh").unwrap();
        f.opened = f
            .opened
            .checked_sub(std::time::Duration::from_secs(2))
            .unwrap();
        o.tick().unwrap();
        let all = names(dir.path());
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(
            all[0].starts_with("ssh.2") && all[0].ends_with(".jsonl"),
            "{all:?}"
        );
        assert_eq!(lines(&dir.path().join(&all[0])), ["{\"a\":1}"]);
        // The next record starts a new file.
        o.record("ssh", "C3", "{\"a\":2}").unwrap();
        o.finish().unwrap();
        assert_eq!(lines(&dir.path().join("ssh.jsonl")), ["{\"a\":2}"]);
    }
}
