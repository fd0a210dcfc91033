//! `mos-sensor`'s configuration file: a bad file is one line naming the file, the line and the
//! key; a good one is honoured; the command line wins key by key; the shipped file works.
//! Needs a built sensor (`cargo build -p mos-sensor`).

use anyhow::{ensure, Result};
use mos_tests::locate::{corpus_dir, sensor_bin};
use mos_tests::procs::sensor_stat;
use mos_tests::runner::ScratchDir;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sensor(args: &[&OsStr]) -> Result<Output> {
    Ok(Command::new(sensor_bin()?)
        .env("MOS_SENSOR_CONFIG", "")
        .args(args)
        .output()?)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn http_pcap() -> Result<PathBuf> {
    Ok(corpus_dir()?.join("pcaps/dpkt__examples__data__http.pcap"))
}

#[test]
fn each_kind_of_bad_file_is_one_line_naming_file_line_and_key() -> Result<()> {
    let dir = ScratchDir::new("config-bad")?;
    let pcap = http_pcap()?;
    // (what, file text, line, what the message names after the line)
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "unknown key",
            "[tracking]\nchunk_kib = 64\nchunks_kib = 64\n",
            3,
            "tracking.chunks_kib: unknown key",
        ),
        (
            "unknown section",
            "[tracking]\nchunk_kib = 64\n\n[trakcing]\nchunk_kib = 64\n",
            4,
            "trakcing: unknown section",
        ),
        (
            "wrong type",
            "[sensor]\nworkers = \"two\"\n",
            2,
            "sensor.workers: expected an integer, found a string",
        ),
        (
            "out of range",
            "# comment\n[publish]\nevent_ring = 33554432\n",
            3,
            "publish.event_ring: must be a power of two between 2 and 16777216, not 33554432",
        ),
        (
            "not a power of two",
            "[tracking]\nchunk_kib = 300\n",
            2,
            "tracking.chunk_kib: must be a power of two between 4 and 1024, not 300",
        ),
        (
            "below a power of two's range",
            "[tracking]\nstream_max_kib = 2\n",
            2,
            "tracking.stream_max_kib: must be a power of two between 8 and 1048576, not 2",
        ),
        (
            "bad choice",
            "[tracking]\noverlap = \"middle\"\n",
            2,
            "tracking.overlap: \"middle\" is not one of \"first\", \"last\", \"linux\", \"bsd\", \"windows\"",
        ),
        (
            "bad size",
            "[sensor]\nworkers = 1\nmemcap = \"8 gigs\"\n",
            3,
            "sensor.memcap: ",
        ),
        (
            "duplicate key",
            "[fragments]\ntimeout = 30\ndatagrams = 10\ntimeout = 31\n",
            4,
            "fragments.timeout: set twice",
        ),
        (
            "syntax error",
            "[control]\nsocket = \"/run/mos/c.sock\n",
            2,
            "syntax error (not valid TOML): ",
        ),
        (
            "unknown group",
            "[control]\nallow_users = [\"root\"]\nallow_groups = [\"mos-no-such-group-for-tests\"]\n",
            3,
            "control.allow_groups: no group named \"mos-no-such-group-for-tests\" in /etc/group",
        ),
        (
            "two inputs",
            "[input]\npcap = \"a.pcap\"\niface = \"lo\"\n",
            3,
            "input.iface: set only one of input.pcap, input.dpdk and input.iface",
        ),
        (
            "removed key",
            "[metrics]\nlisten = \"127.0.0.1:9477\"\n",
            2,
            "metrics.listen: was removed: the sensor opens no TCP port; run `mos-ctl metrics --listen ADDR` (unit mos-metrics.service)",
        ),
        (
            "removed ring size",
            "[sensor]\nworkers = 1\n\n[tracking]\nring_kib = 256\n",
            5,
            "tracking.ring_kib: was removed: each side's stream now grows in chunks from a pool as its window needs; set the pool with tracking.stream_chunks (--stream-chunks) and tracking.chunk_kib, a side's most with tracking.stream_max_kib",
        ),
        (
            "removed ring count",
            "[tracking]\nmax_rings = 16384\n",
            2,
            "tracking.max_rings: was removed: each side's stream now grows in chunks from a pool",
        ),
    ];
    for (i, (what, text, line, message)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text)?;
        let o = sensor(&[
            "--config".as_ref(),
            path.as_ref(),
            "--pcap".as_ref(),
            pcap.as_ref(),
            "--no-publish".as_ref(),
        ])?;
        let err = stderr(&o);
        ensure!(
            o.status.code() == Some(1),
            "{what}: exit {:?}: {err}",
            o.status
        );
        ensure!(err.lines().count() == 1, "{what}: not one line: {err}");
        let want = format!("mos-sensor: error: {}:{line}: {message}", path.display());
        ensure!(err.starts_with(&want), "{what}:\n want {want}\n got  {err}");
    }
    Ok(())
}

#[test]
fn missing_files_and_missing_inputs() -> Result<()> {
    let dir = ScratchDir::new("config-missing")?;
    let missing = dir.path().join("nope.toml");
    let o = sensor(&[
        "--config".as_ref(),
        missing.as_ref(),
        "--pcap".as_ref(),
        "x".as_ref(),
    ])?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "mos-sensor: error: {}: cannot read",
            missing.display()
        )),
        "{err}"
    );
    // A file without an input, and no input on the command line.
    let path = dir.path().join("noinput.toml");
    std::fs::write(&path, "[tracking]\nchunk_kib = 64\n")?;
    let o = sensor(&["--config".as_ref(), path.as_ref()])?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "mos-sensor: error: no input: set one of input.pcap, input.dpdk or input.iface in {}, or give --pcap, --dpdk or --iface",
            path.display()
        )
    );
    // --no-config with --config is a command-line error.
    let o = sensor(&["--config".as_ref(), path.as_ref(), "--no-config".as_ref()])?;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    Ok(())
}

#[test]
fn a_file_is_honoured_and_flags_override_it() -> Result<()> {
    let dir = ScratchDir::new("config-good")?;
    let pcap = http_pcap()?;
    let dump = dir.path().join("dump");
    let path = dir.path().join("sensor.toml");
    std::fs::write(
        &path,
        format!(
            "# the input and the output from the file alone\n\
             [input]\npcap = {pcap:?}\n\n[output]\ndump = {dump:?}\n\n\
             [tracking]\nchunk_kib = 128\n\n[publish]\nenabled = false\n"
        ),
    )?;
    let run = |extra: &[&OsStr]| -> Result<String> {
        let mut args: Vec<&OsStr> = vec!["--config".as_ref(), path.as_ref()];
        args.extend_from_slice(extra);
        let o = sensor(&args)?;
        let err = stderr(&o);
        ensure!(o.status.success(), "{:?}: {err}", o.status);
        Ok(err)
    };
    let err = run(&[])?;
    assert!(
        err.starts_with(&format!(
            "mos-sensor: configuration from {}\n",
            path.display()
        )),
        "{err}"
    );
    let flows = std::fs::read_to_string(dump.join("flows.jsonl"))?;
    assert_eq!(flows.lines().count(), 2, "{flows}");
    let big_chunks = sensor_stat(&err, "mem_bound_kib")?;

    // The same with the flag at its default: the flag wins, and the bound is the default's.
    let err = run(&["--chunk-kib".as_ref(), "32".as_ref()])?;
    let default_chunks = sensor_stat(&err, "mem_bound_kib")?;
    let plain = sensor(&[
        "--no-config".as_ref(),
        "--no-publish".as_ref(),
        "--pcap".as_ref(),
        pcap.as_ref(),
    ])?;
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert_eq!(
        default_chunks,
        sensor_stat(&stderr(&plain), "mem_bound_kib")?
    );
    // 6144 chunks of 128 KiB instead of 32 KiB; and 6144 chunk maps of 16 MiB / 128 KiB = 128
    // entries instead of 16 MiB / 32 KiB = 512, of 4 bytes each.
    let maps_kib = 6144 * (512 - 128) * 4 / 1024;
    assert_eq!(big_chunks - default_chunks, 6144 * (128 - 32) - maps_kib);

    // An input on the command line replaces the file's; --quiet silences the note.
    std::fs::remove_dir_all(&dump)?;
    let other = corpus_dir()?.join("pcaps/dnscap__src__test__1qtcpnosyn.pcap");
    let err = run(&["--pcap".as_ref(), other.as_ref(), "-q".as_ref()])?;
    assert!(err.is_empty(), "{err}");
    let flows = std::fs::read_to_string(dump.join("flows.jsonl"))?;
    assert!(
        !flows.contains("145.254.160.237"),
        "the file's capture was read: {flows}"
    );
    Ok(())
}

#[test]
fn the_shipped_file_is_what_print_config_prints_and_it_runs() -> Result<()> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sensor.toml");
    let o = sensor(&["--print-config".as_ref()])?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8(o.stdout)?,
        std::fs::read_to_string(&shipped)?
    );
    // Group "mos" may not exist here: --allow-group replaces the file's list.
    let o = sensor(&[
        "--config".as_ref(),
        shipped.as_ref(),
        "--pcap".as_ref(),
        http_pcap()?.as_ref(),
        "--no-publish".as_ref(),
        "--allow-group".as_ref(),
        "0".as_ref(),
    ])?;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.starts_with(&format!(
            "mos-sensor: configuration from {}",
            shipped.display()
        )),
        "{err}"
    );
    assert_eq!(sensor_stat(&err, "conns")?, 2, "{err}");
    Ok(())
}

#[test]
fn the_default_file_is_the_one_mos_sensor_config_names_and_none_when_it_is_empty() -> Result<()> {
    let scratch = ScratchDir::new("config-env")?;
    let file = scratch.path().join("default.toml");
    let dump = scratch.path().join("dump");
    std::fs::write(
        &file,
        format!(
            "[input]\npcap = \"{}\"\n\n[publish]\nenabled = false\n\n[output]\ndump = \"{}\"\n",
            http_pcap()?.display(),
            dump.display()
        ),
    )?;
    // Named by the variable: read without --config, input and all.
    let o = Command::new(sensor_bin()?)
        .env("MOS_SENSOR_CONFIG", &file)
        .output()?;
    ensure!(o.status.success(), "{}", stderr(&o));
    ensure!(
        stderr(&o).contains(&format!("configuration from {}", file.display())),
        "{}",
        stderr(&o)
    );
    ensure!(
        dump.join("flows.jsonl").is_file(),
        "the file's dump was not written"
    );
    // Empty: no default file, so no input either.
    let o = Command::new(sensor_bin()?)
        .env("MOS_SENSOR_CONFIG", "")
        .output()?;
    ensure!(o.status.code() == Some(1), "{}", stderr(&o));
    ensure!(stderr(&o).contains("no input"), "{}", stderr(&o));
    ensure!(!stderr(&o).contains("configuration from"), "{}", stderr(&o));
    Ok(())
}
