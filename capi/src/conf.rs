//! `mtcp_init`'s configuration file: an mOS `mos.conf` (blocks `name { ... }` of `key = value`
//! lines, `#` comments), of which mos takes only `control = PATH` (the sensor's control
//! socket). The rest configures mOS's own packet I/O, which the sensor owns here: it is
//! ignored, and `mtcp_init` says once on stderr which keys it ignored.

use std::path::PathBuf;

/// What the file said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileConf {
    /// `control = PATH`, in any block.
    pub control: Option<PathBuf>,
    /// The keys that do not apply to mos, in the order first seen.
    pub ignored: Vec<String>,
}

/// Parses the text of a configuration file; an error names the line.
pub fn parse(text: &str) -> Result<FileConf, String> {
    let mut out = FileConf::default();
    let mut depth = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut rest = line;
        // `name {` opens a block, `}` closes one; both may share a line with a setting.
        if let Some(open) = rest.strip_suffix('{') {
            depth += 1;
            rest = open.trim();
            if rest.contains('=') || rest.contains('}') {
                return Err(format!(
                    "line {n}: a block's name is a single word: {line:?}"
                ));
            }
            continue;
        }
        if rest == "}" {
            depth = depth
                .checked_sub(1)
                .ok_or_else(|| format!("line {n}: '}}' closes no block"))?;
            continue;
        }
        if rest.contains('{') || rest.contains('}') {
            return Err(format!(
                "line {n}: braces go at the end of a block's line or alone: {line:?}"
            ));
        }
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            // Inside `netdev { dpdk0 0x000F }` and the like: a name and a value.
            None => match rest.split_once(char::is_whitespace) {
                Some((k, v)) => (k.trim(), v.trim()),
                None => (rest, ""),
            },
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("line {n}: expected `key = value`: {line:?}"));
        }
        if key == "control" {
            if value.is_empty() {
                return Err(format!("line {n}: `control` needs a path"));
            }
            out.control = Some(PathBuf::from(value));
        } else if !out.ignored.iter().any(|k| k == key) {
            out.ignored.push(key.to_string());
        }
    }
    if depth != 0 {
        return Err(format!(
            "{depth} block(s) not closed at the end of the file"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mos_conf_parses_and_its_keys_are_ignored_but_control() {
        let text = "# app\napplication {\n  type = monitor\n  run = midstat\n  core_mask = 0x000F\n}\n\nmos {\n  forward = 1\n  nb_mem_channels = 4\n  netdev {\n    dpdk0 0x000F\n  }\n  stat_print = dpdk0\n  control = /tmp/x.sock  # ours\n}\n";
        let c = parse(text).unwrap();
        assert_eq!(c.control, Some(PathBuf::from("/tmp/x.sock")));
        assert_eq!(
            c.ignored,
            [
                "application",
                "type",
                "run",
                "core_mask",
                "mos",
                "forward",
                "nb_mem_channels",
                "netdev",
                "dpdk0",
                "stat_print"
            ]
            .iter()
            .filter(|k| !["application", "mos", "netdev"].contains(k))
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            parse("a = 1\n}\n").unwrap_err(),
            "line 2: '}' closes no block"
        );
        assert!(parse("mos {\n a = 1\n").unwrap_err().contains("not closed"));
        assert!(parse("x {y\n}").unwrap_err().starts_with("line 1:"));
        assert!(parse("control =\n").unwrap_err().starts_with("line 1:"));
        assert!(parse("a b = c\n").unwrap_err().starts_with("line 1:"));
    }
}
