//! Section-3 pages: the C API's roff sources in `capi/man/`, embedded at build time. Their
//! `.TH` lines carry `@DATE@` and `@VERSION@`, filled in here.

use crate::VERSION;

macro_rules! pages {
    ($($name:literal),* $(,)?) => {
        /// Every page of `capi/man/`: its file name and its source.
        pub const PAGES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../capi/man/", $name)))),*
        ];
    };
}

pages!(
    "libmos.3",
    "mos_api.3",
    "mtcp_init.3",
    "mtcp_destroy.3",
    "mtcp_getconf.3",
    "mtcp_setconf.3",
    "mtcp_create_context.3",
    "mtcp_destroy_context.3",
    "mtcp_app_join.3",
    "mtcp_core_affinitize.3",
    "mtcp_register_signal.3",
    "mtcp_socket.3",
    "mtcp_close.3",
    "mtcp_bind_monitor_filter.3",
    "mtcp_register_callback.3",
    "mtcp_define_event.3",
    "mtcp_alloc_event.3",
    "mtcp_raise_event.3",
    "mtcp_peek.3",
    "mtcp_ppeek.3",
    "mtcp_getsockopt.3",
    "mtcp_setsockopt.3",
    "mtcp_getlastpkt.3",
    "mtcp_getpeername.3",
    "mtcp_settimer.3",
    "mtcp_cb_get_ts.3",
    "mtcp_set_uctx.3",
    "mtcp_get_uctx.3",
    "mtcp_setlastpkt.3",
    "mtcp_sendpkt.3",
);

/// A page's source with its date and version filled in.
pub fn render(source: &str, date: &str) -> String {
    source
        .replace("@DATE@", date)
        .replace("@VERSION@", &VERSION.replace('-', "\\-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `capi/man/` is embedded, and every function the headers declare has a
    /// page (a page of its own or a `.so` link).
    #[test]
    fn every_page_and_every_function_is_here() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files: Vec<String> = std::fs::read_dir(root.join("capi/man"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut listed: Vec<String> = PAGES.iter().map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(files, listed, "capi/man and mos_docgen::man3::PAGES differ");
        for header in ["mos_api.h", "mtcp_api.h"] {
            let text = std::fs::read_to_string(root.join("capi/include").join(header)).unwrap();
            for line in text.lines() {
                if line.starts_with(|c: char| c.is_ascii_whitespace())
                    || line.starts_with("typedef")
                    || line.starts_with('#')
                    || line.starts_with('/')
                {
                    continue;
                }
                let Some(open) = line.find('(') else { continue };
                // The identifier just before the parameter list.
                let start = line[..open]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(0, |i| i + 1);
                let name = &line[start..open];
                if !name.starts_with("mtcp_") {
                    continue;
                }
                assert!(
                    listed.contains(&format!("{name}.3")),
                    "{header} declares {name}, which has no page"
                );
            }
        }
    }

    #[test]
    fn pages_get_their_date_and_version() {
        for (name, source) in PAGES {
            let page = render(source, "2026-01-01");
            let first = page.lines().next().unwrap_or_default();
            if first.starts_with(".so ") {
                assert_eq!(page.lines().count(), 1, "{name}: a link page is one line");
                let target = first.trim_start_matches(".so man3/");
                assert!(
                    PAGES.iter().any(|(n, _)| *n == target),
                    "{name} links to {target}"
                );
                continue;
            }
            assert!(first.starts_with(".TH "), "{name}: {first}");
            assert!(
                first.contains("2026-01-01") && !page.contains('@'),
                "{name}: {first}"
            );
        }
    }
}
