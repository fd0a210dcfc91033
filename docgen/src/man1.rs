//! Section-1 pages: what `clap_mangen` makes of a binary's clap definition (name, synopsis,
//! description, options, version), each of `mos-ctl`'s commands with its own options, and the
//! sections `--help` has no room for.

use crate::{Binary, VERSION};
use anyhow::{Context, Result};
use clap::Command;
use clap_mangen::Man;

/// The `SEE ALSO` entries every page shares: the other binaries, the configuration file, the
/// C API's overview.
const FAMILY: [&str; 9] = [
    "mos-sensor(1)",
    "mos-ctl(1)",
    "mos-dump(1)",
    "mos-flowstat(1)",
    "mos-grep(1)",
    "mos-log(1)",
    "mos-pcap(1)",
    "mos-sensor.toml(5)",
    "libmos(3)",
];

/// What analyzers share: how they attach and how they end.
const ANALYZER_ATTACH: &str = r".SH ATTACHING
An analyzer attaches to a running \fBmos\-sensor\fR(1) through its control socket
(\fB\-\-control\fR), trying for up to \fB\-\-wait\fR seconds while no sensor listens there, so
that it may start before its sensor. The sensor lets attach only root, its own user, and the
users and groups of its \fBallow_users\fR and \fBallow_groups\fR
(\fBmos\-sensor.toml\fR(5)); under systemd the template unit \fBmos\-analyzer@.service\fR
runs instance \fINAME\fR as a dynamic user of its own, \fBmos\-analyzer\-\fINAME\fR, a
member of group \fBmos\fR (whose members may attach). The connections it receives
can be narrowed with \fB\-\-filter\fR, which the sensor runs on each connection's first packet.
.PP
In a replay the sensor waits for the analyzer (lossless); an analyzer that makes no progress
for the sensor's stall timeout is detached. With a live input the sensor does not wait: a
full event ring drops events, which the analyzer's summary and \fBmos\-ctl status\fR count.
";

const ANALYZER_EXIT: &str = r".SH EXIT STATUS
.TP
.B 0
The sensor's input ended and every event was handled.
.TP
.B 1
An error: a value out of range (one line), an output that fails, no sensor to attach to
within \fB\-\-wait\fR, or the sensor going away or detaching this analyzer (what was gathered
so far is still written).
.TP
.B 2
A malformed command line (an unknown option, a missing value).
.TP
.B 130
Stopped by SIGINT or SIGTERM, after detaching and writing what it had.
";

const ANALYZER_ENV: &str = r".SH ENVIRONMENT
.TP
.B MOS_ANALYZER_FILTER
The default of \fB\-\-filter\fR, where a unit's environment file can set it.
";

const ANALYZER_FILES: &str = r".TP
.B /run/mos/control.sock
The sensor's control socket (the default of \fB\-\-control\fR).
.TP
.B /etc/mos/analyzers/
The environment files of the \fBmos\-analyzer@\fR units (\fINAME\fR.env: the analyzer's
arguments and its filter).
";

/// Sections written for each binary, after the generated ones and before `SEE ALSO`.
fn extra(name: &str) -> String {
    match name {
        "mos-sensor" => r#".SH EXIT STATUS
.TP
.B 0
The input ended (or a live capture was stopped by \fB\-\-stop\-after\-idle\fR or
\fB\-\-count\fR) and everything was published; or \fB\-\-help\fR, \fB\-\-version\fR,
\fB\-\-print\-config\fR, \fB\-\-print\-hugepages\fR.
.TP
.B 1
An error: an option or configuration key out of range (one line naming it), settings that do
not fit \fB\-\-memcap\fR, an input that cannot be opened, a configuration file that cannot be
read.
.TP
.B 2
A capture truncated or malformed part\-way (what came before it was processed and
published), or a malformed command line.
.TP
.B 130
Stopped by SIGINT or SIGTERM.
.SH SIGNALS
.TP
.BR SIGINT ", " SIGTERM
End the input where it is: open connections end, analyzers drain their events and are told
the sensor is done. A second signal exits at once.
.TP
.B SIGHUP
Read the configuration file again. Who may attach (\fBcontrol.allow_users\fR,
\fBcontrol.allow_groups\fR) and \fBsensor.stall_timeout\fR change at once; the sensor logs
which other changed keys wait for a restart. \fBsystemctl reload mos\-sensor\fR sends it.
.SH ENVIRONMENT
.TP
.B MOS_SENSOR_CONFIG
The configuration file read when \fB\-\-config\fR is not given, instead of
\fI/etc/mos/sensor.toml\fR; set but empty, none.
.TP
.B NOTIFY_SOCKET
Set by systemd for a \fBType=notify\fR service: the sensor reports readiness (once the
shared memory is published and the control socket listens), reloads and stopping there, and
writes its log lines with syslog levels for the journal.
.SH FILES
.TP
.B /etc/mos/sensor.toml
The configuration file, \fBmos\-sensor.toml\fR(5).
.TP
.B /run/mos/control.sock
The control socket analyzers and \fBmos\-ctl\fR(1) connect to (the default of
\fB\-\-control\fR).
.TP
.B mos\-sensor.service
The systemd unit that runs the sensor as the system user \fBmos\-sensor\fR, group
\fBmos\fR, with the capabilities it needs;
\fBmos\-analyzer@.service\fR runs analyzers, \fBmos\-metrics.service\fR serves the metrics.
.SH EXAMPLES
Replay a capture, writing each connection's streams into a directory, without publishing:
.PP
.RS 4
.nf
mos\-sensor \-\-pcap trace.pcap \-\-no\-publish \-\-dump out/
.fi
.RE
.PP
Replay a capture once an analyzer is attached, and follow it with one:
.PP
.RS 4
.nf
mos\-sensor \-\-pcap trace.pcap \-\-control /tmp/mos.sock \-\-wait\-analyzers 1 &
mos\-log \-\-control /tmp/mos.sock \-\-out logs/
.fi
.RE
.PP
Capture live on an interface with four workers on CPUs 2 to 5:
.PP
.RS 4
.nf
mos\-sensor \-\-iface eth1 \-\-workers 4 \-\-cpus 2\-5
.fi
.RE
.PP
Print the default configuration file, and the hugepages a configuration needs:
.PP
.RS 4
.nf
mos\-sensor \-\-print\-config
mos\-sensor \-\-config /etc/mos/sensor.toml \-\-print\-hugepages
.fi
.RE
"#
        .to_owned(),
        "mos-ctl" => r#".SH EXIT STATUS
.TP
.B 0
The report was printed, the metrics server was stopped, or \fBtop\fR was left with q, Esc or
Ctrl\-C.
.TP
.B 1
An error: no sensor at the control socket, no answer within \fB\-\-timeout\fR, a user the
sensor does not answer, an address that cannot be served, or a malformed command line.
.TP
.B 2
\fBtop\fR without a terminal on standard output.
.TP
.B 128+\fIN\fR
\fBtop\fR ended by signal \fIN\fR (SIGINT, SIGTERM or SIGHUP).
.SH FILES
.TP
.B /run/mos/control.sock
The sensor's control socket (the default of \fB\-\-control\fR).
.TP
.B mos\-metrics.service
The systemd unit that runs \fBmos\-ctl metrics \-\-listen\fR, its address taken from the
environment file \fB/etc/mos/metrics.env\fR.
.SH EXAMPLES
.nf
mos\-ctl status
mos\-ctl status \-\-json
mos\-ctl metrics \-\-listen 127.0.0.1:9477
mos\-ctl \-\-control /tmp/mos.sock top \-\-interval 0.5
.fi
"#
        .to_owned(),
        "mos-flowstat" => format!(
            "{ANALYZER_ATTACH}.SH EXIT STATUS
.TP
.B 0
The sensor's input ended, or SIGINT or SIGTERM stopped it (after detaching).
.TP
.B 1
An error, or the sensor went away or detached it (the last table is printed, the summary in
the error line).
.TP
.B 2
A malformed command line.
{ANALYZER_ENV}.SH FILES
{ANALYZER_FILES}.SH EXAMPLES
.nf
mos\\-flowstat \\-\\-interval 0.5 \\-\\-filter 'tcp port 443'
.fi
"
        ),
        "mos-dump" => format!(
            "{ANALYZER_ATTACH}{ANALYZER_EXIT}{ANALYZER_ENV}.SH FILES
.TP
.IB DIR /flows.jsonl
One JSON record per connection, as \\fBmos\\-sensor \\-\\-dump\\fR writes it.
.TP
\\fIDIR\\fB/\\fISERIAL\\fB\\-\\fIFROM\\fB\\-\\fITO\\fB.c2s\\fR, \\fB.s2c\\fR
Each direction's bytes; bytes lost are holes (zeros).
{ANALYZER_FILES}.SH EXAMPLES
.nf
mos\\-dump \\-\\-out /var/lib/mos/streams \\-\\-filter 'port 80'
.fi
"
        ),
        "mos-log" => format!(
            "{ANALYZER_ATTACH}{ANALYZER_EXIT}{ANALYZER_ENV}.SH FILES
.TP
.IB DIR / LOG .jsonl
With \\fB\\-\\-out\\fR \\fIDIR\\fR: one file per log (conn, http, tls, ssh, weird).
{ANALYZER_FILES}.SH EXAMPLES
.nf
mos\\-log \\-\\-out /var/log/mos
mos\\-log \\-\\-logs conn,tls | jq 'select(.server_name != null)'
.fi
"
        ),
        "mos-grep" => format!(
            "{ANALYZER_ATTACH}{ANALYZER_EXIT}{ANALYZER_ENV}.SH FILES
.TP
.IB DIR /match.jsonl
With \\fB\\-\\-out\\fR \\fIDIR\\fR: the match records.
{ANALYZER_FILES}.SH EXAMPLES
.nf
mos\\-grep \\-e passwd \\-E '(?i)authorization: basic [a\\-z0\\-9+/=]+' \\-\\-context 16
mos\\-grep \\-f patterns.txt \\-\\-side orig \\-\\-out /var/log/mos
.fi
"
        ),
        "mos-pcap" => format!(
            "{ANALYZER_ATTACH}{ANALYZER_EXIT}{ANALYZER_ENV}.SH FILES
{ANALYZER_FILES}.SH EXAMPLES
The connections in whose streams \\fBmos\\-grep\\fR finds \\(lqpasswd\\(rq:
.PP
.RS 4
.nf
mos\\-grep \\-e passwd | mos\\-pcap \\-\\-matches \\- \\-\\-out hits.pcapng
.fi
.RE
.PP
Every connection to port 443, one pcapng section per start of a service:
.PP
.RS 4
.nf
mos\\-pcap \\-\\-filter 'tcp port 443' \\-\\-append \\-\\-out /var/lib/mos/tls.pcapng
.fi
.RE
"
        ),
        _ => String::new(),
    }
}

/// `SEE ALSO` for `name`: the rest of the family, and what the binary works with.
fn see_also(name: &str) -> String {
    let mut refs: Vec<String> = FAMILY
        .iter()
        .filter(|r| !r.starts_with(&format!("{name}(")))
        .map(|r| r.to_string())
        .collect();
    match name {
        "mos-sensor" => refs.extend(["systemd.service(5)".into(), "pcap-filter(7)".into()]),
        "mos-ctl" => refs.push("systemd.service(5)".into()),
        "mos-pcap" => refs.extend(["pcap-filter(7)".into(), "tcpdump(8)".into()]),
        _ => refs.push("pcap-filter(7)".into()),
    }
    let items: Vec<String> = refs
        .iter()
        .map(|r| {
            let (page, sec) = r.split_once('(').unwrap_or((r, ")"));
            format!("\\fB{}\\fR({sec}", page.replace('-', "\\-"))
        })
        .collect();
    format!(
        ".SH SEE ALSO\n{}\n.PP\nThe documents in /usr/share/doc/mos (\\fIPREFIX\\fR/share/doc/mos when \
         installed by deploy/install.sh): OPERATIONS.md (running the service), CONFIG.md, \
         ANALYZERS.md, C\\-API.md.\n",
        items.join(",\n")
    )
}

/// `cmd` with `summary` as its `NAME` line and its description kept: the long help, or the
/// help when it has no long one.
fn with_summary(cmd: Command, summary: &str) -> Command {
    let long = cmd.get_long_about().or_else(|| cmd.get_about()).cloned();
    match long {
        Some(long) => cmd.about(summary.to_owned()).long_about(long),
        None => cmd.about(summary.to_owned()),
    }
}

/// The lines the `roff` crate starts every rendering with: they define the string `Aq` (an
/// apostrophe), which a page needs once, at its top.
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// One part of a page as `clap_mangen` renders it, without the preamble.
fn render(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> Result<String> {
    let mut buf = Vec::new();
    f(&mut buf)?;
    let text = String::from_utf8(buf).context("clap_mangen wrote bytes that are not UTF-8")?;
    Ok(text.replace(PREAMBLE, ""))
}

/// `mos-ctl`'s commands: each with its long help and its own options.
fn commands(cmd: &Command) -> Result<String> {
    let mut out = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        out.push_str(&format!(
            ".SS \"{} {} [\\fIOPTIONS\\fR]\"\n",
            cmd.get_name().replace('-', "\\-"),
            sub.get_name()
        ));
        let man = Man::new(sub.clone());
        let desc = render(|b| man.render_description_section(b))?;
        out.push_str(strip_heading(&desc, ".SH DESCRIPTION"));
        let opts = render(|b| man.render_options_section(b))?;
        out.push_str(".PP\nOptions:\n");
        out.push_str(strip_heading(&opts, ".SH OPTIONS"));
    }
    Ok(out)
}

/// `roff` without its first line when that line is `heading`.
fn strip_heading<'a>(roff: &'a str, heading: &str) -> &'a str {
    roff.strip_prefix(heading)
        .map(|r| r.trim_start_matches('\n'))
        .unwrap_or(roff)
}

/// The page of `bin`, dated `date`.
pub fn page(bin: &Binary, date: &str) -> Result<String> {
    let cmd = with_summary((bin.command)(), bin.summary);
    let man = Man::new(cmd.clone())
        .date(date)
        .source(format!("mos {VERSION}"))
        .manual("mos manual");
    let mut out = String::from(PREAMBLE);
    out.push_str(&render(|b| man.render_title(b))?);
    out.push_str(&render(|b| man.render_name_section(b))?);
    out.push_str(&render(|b| man.render_synopsis_section(b))?);
    out.push_str(&render(|b| man.render_description_section(b))?);
    out.push_str(&render(|b| man.render_options_section(b))?);
    if cmd.has_subcommands() {
        out.push_str(&commands(&cmd)?);
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        out.push_str(&render(|b| man.render_extra_section(b))?);
    }
    out.push_str(&extra(bin.name));
    out.push_str(&render(|b| man.render_version_section(b))?);
    out.push_str(&see_also(bin.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BINARIES;

    #[test]
    fn every_page_has_the_sections_a_reader_looks_for() {
        for bin in &BINARIES {
            let p = page(bin, "2026-01-01").unwrap();
            for s in [
                ".SH NAME",
                ".SH SYNOPSIS",
                ".SH DESCRIPTION",
                ".SH OPTIONS",
                ".SH EXIT STATUS",
                ".SH FILES",
                ".SH SEE ALSO",
            ] {
                assert!(p.contains(s), "{} lacks {s}", bin.name);
            }
            assert!(
                p.contains(&bin.summary.replace('-', "\\-").replace('\'', "\\*(Aq")),
                "{}",
                bin.name
            );
            assert!(
                !p.contains(&format!("\\fB{}\\fR(1)", bin.name.replace('-', "\\-"))),
                "{} refers to itself",
                bin.name
            );
        }
    }

    #[test]
    fn mos_ctl_documents_each_command_with_its_options() {
        let p = page(&BINARIES[1], "2026-01-01").unwrap();
        for c in ["status", "metrics", "top"] {
            assert!(p.contains(&format!(".SS \"mos\\-ctl {c} ")), "{c}");
        }
        for o in ["json", "listen", "interval"] {
            assert!(p.contains(&format!("\\-\\-{o}")), "--{o}");
        }
    }
}
