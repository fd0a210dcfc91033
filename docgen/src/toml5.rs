//! `mos-sensor.toml(5)`: the configuration file's manual page, made from the sensor's table of
//! keys ([`config::KEYS`], [`config::SECTIONS`], [`config::REMOVED`]) and the prose of
//! [`config::reference_doc`], the generator of `docs/CONFIG.md`: the page and the document
//! cannot say different things.

use crate::roff::{bold, inline, markdown, text};
use mos_sensor::config::{self, Default, Flag, Key};

/// The flags a key stands for, as roff.
fn flags(k: &Key) -> String {
    match k.flag {
        Flag::Value(f) => bold(f),
        Flag::Switch(f, v) => format!("{} (when {})", bold(f), bold(&v.to_string())),
        Flag::Choices(c) => c
            .iter()
            .filter_map(|(name, f)| f.map(|f| format!("{} (for {})", bold(f), bold(name))))
            .collect::<Vec<_>>()
            .join(", "),
        Flag::Repeat(f) => format!("{}, once per element", bold(f)),
    }
}

/// The prose of `docs/CONFIG.md` before its table of keys (how the file is found, precedence,
/// how values are checked), as roff.
fn reference_prose() -> Result<String, String> {
    let doc = config::reference_doc();
    let start = doc
        .find("-->")
        .map(|i| i + 3)
        .ok_or("docs/CONFIG.md's text has no generated-file comment")?;
    let end = doc
        .find("\n## Keys and flags")
        .ok_or("docs/CONFIG.md's text has no section \"Keys and flags\"")?;
    markdown(&doc[start..end])
}

/// The page, dated `date`, for version `version`.
pub fn page(date: &str, version: &str) -> Result<String, String> {
    let mut out = String::new();
    out.push_str(&format!(
        ".TH MOS\\-SENSOR.TOML 5 \"{date}\" \"mos {}\" \"File Formats\"\n",
        text(version)
    ));
    out.push_str(".SH NAME\nmos\\-sensor.toml \\- configuration file of the mos sensor\n");
    out.push_str(&format!(
        ".SH SYNOPSIS\n{}\n.br\n{} [{}] [{} \\fIFILE\\fR | {}]\n",
        bold(config::DEFAULT_PATH),
        bold("mos-sensor"),
        bold("--print-config"),
        bold("--config"),
        bold("--no-config"),
    ));
    out.push_str(".SH DESCRIPTION\n");
    out.push_str(&reference_prose()?);
    out.push_str(
        ".PP\nThe file is TOML: each section below is a table (\\fB[input]\\fR, \
         \\fB[sensor]\\fR, ...), and each key is set at most once. Every key is optional.\n",
    );
    out.push_str(".SH KEYS\n");
    for (section, about) in config::SECTIONS {
        out.push_str(&format!(".SS [{section}]\n{}\n", inline(about)));
        if *section == "input" {
            out.push_str("One of them must be set, here or on the command line.\n");
        }
        for k in config::KEYS.iter().filter(|k| k.section == *section) {
            let default = match k.default {
                Default::Value(v) => bold(v),
                Default::Unset(_) => "unset".to_owned(),
            };
            out.push_str(&format!(
                ".TP\n{}\n{}\n.IP\nType: {}.\n.br\nDefault: {default}.\n.br\nFlag: {}.\n",
                bold(&k.path()),
                inline(k.meaning),
                inline(&k.ty.describe()),
                flags(k)
            ));
        }
    }
    out.push_str(
        ".SH REMOVED KEYS\nA file that sets one of these keys, or a command line that gives its \
         flag, stops the sensor with one line saying what to do instead.\n",
    );
    for r in config::REMOVED {
        out.push_str(&format!(
            ".TP\n{} ({})\n{}\n",
            bold(&format!("{}.{}", r.section, r.name)),
            bold(r.flag),
            inline(r.instead)
        ));
    }
    out.push_str(&format!(
        ".SH FILES\n.TP\n{}\nThe file read when neither \\fB\\-\\-config\\fR nor \
         \\fB\\-\\-no\\-config\\fR is given (a missing file is not an error).\n",
        bold(config::DEFAULT_PATH)
    ));
    out.push_str(&format!(
        ".SH ENVIRONMENT\n.TP\n{}\nThe file read instead of {}; set but empty, none.\n",
        bold(config::ENV_DEFAULT),
        bold(config::DEFAULT_PATH)
    ));
    out.push_str(
        ".SH EXAMPLES\nReplay a capture with two workers and a larger stream pool, once one \
         analyzer is attached, letting the members of the groups mos and soc attach:\n.PP\n.RS 4\n.nf\n[input]\npcap = \"/var/lib/mos/capture.pcap\"\n\
         \n[sensor]\nworkers = 2\n\n[tracking]\nstream_chunks = 16384\n\n[publish]\nwait_analyzers = 1\n\
         \n[control]\nallow_groups = [\"mos\", \"soc\"]\n.fi\n.RE\n.PP\n",
    );
    out.push_str(&format!(
        "Check a file without running the sensor: {} prints how many hugepages it needs, or \
         the one line that is wrong in it.\n",
        bold("mos-sensor --config FILE --print-hugepages")
    ));
    out.push_str(&format!(
        ".SH SEE ALSO\n{}(1), {}(1), {}(5)\n.PP\nThe same reference as Markdown: {}, \
         installed with the documents in /usr/share/doc/mos (\\fIPREFIX\\fR/share/doc/mos \
         by deploy/install.sh).\n",
        bold("mos-sensor"),
        bold("mos-ctl"),
        bold("systemd.service"),
        bold("CONFIG.md")
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_and_removed_key_is_on_the_page() {
        let p = page("2026-01-01", "0.1.0").unwrap();
        for k in config::KEYS {
            assert!(p.contains(&bold(&k.path())), "{}", k.path());
        }
        for r in config::REMOVED {
            assert!(p.contains(&bold(r.flag)), "{}", r.flag);
        }
        for (s, _) in config::SECTIONS {
            assert!(p.contains(&format!(".SS [{s}]\n")), "{s}");
        }
    }

    #[test]
    fn the_prose_of_config_md_converts() {
        let prose = reference_prose().unwrap();
        assert!(prose.contains(".SS Precedence"), "{prose}");
        assert!(!prose.contains('`'), "{prose}");
    }
}
