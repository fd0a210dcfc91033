//! Writing roff (the `man` macros) from plain text and from the small part of Markdown that
//! the sensor's configuration texts use: paragraphs, `## headings`, fenced code blocks and
//! `inline code`.

/// Escapes plain text for a roff text line: backslashes, and a leading `.` or `'` (which would
/// make the line a request).
pub fn text(s: &str) -> String {
    let e = s.replace('\\', "\\e");
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}")
    } else {
        e
    }
}

/// Escapes literal text set in a font of its own (a flag, a value, a path): as [`text`], and
/// every `-` a minus sign (`\-`), so that what a reader copies from the page is what a shell
/// takes.
pub fn literal(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// `s` in bold, as a piece of a text line.
pub fn bold(s: &str) -> String {
    format!("\\fB{}\\fR", literal(s))
}

/// One line of Markdown-ish text as a roff text line: `code` spans in bold, the rest escaped.
pub fn inline(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&bold(part));
        } else {
            out.push_str(&part.replace('\\', "\\e"));
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// Markdown-ish text (paragraphs, `## headings`, fenced code blocks, `inline code`) as roff:
/// each paragraph a `.PP`, each heading a `.SS`, each code block indented and unfilled.
/// Anything else Markdown has (lists, tables, links) is refused, so that a text that starts
/// using it is noticed rather than printed raw.
pub fn markdown(md: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut para: Vec<&str> = Vec::new();
    let mut code: Option<Vec<&str>> = None;
    let flush = |para: &mut Vec<&str>, out: &mut String| {
        if !para.is_empty() {
            out.push_str(".PP\n");
            out.push_str(&inline(&para.join(" ")));
            out.push('\n');
            para.clear();
        }
    };
    for line in md.lines() {
        if let Some(block) = code.as_mut() {
            if line.trim_start().starts_with("```") {
                out.push_str(".PP\n.RS 4\n.nf\n");
                for l in block.iter() {
                    out.push_str(&text(l));
                    out.push('\n');
                }
                out.push_str(".fi\n.RE\n");
                code = None;
            } else {
                block.push(line);
            }
            continue;
        }
        let t = line.trim();
        if t.starts_with("```") {
            flush(&mut para, &mut out);
            code = Some(Vec::new());
        } else if let Some(h) = t.strip_prefix("## ") {
            flush(&mut para, &mut out);
            out.push_str(&format!(".SS {}\n", text(h)));
        } else if t.is_empty() {
            flush(&mut para, &mut out);
        } else if t.starts_with('#')
            || t.starts_with("- ")
            || t.starts_with("* ")
            || t.starts_with('|')
            || t.starts_with("<!--")
            || t.contains("](")
        {
            return Err(format!("cannot set this Markdown line in roff: {t}"));
        } else {
            para.push(t);
        }
    }
    if code.is_some() {
        return Err("a code block does not end".into());
    }
    flush(&mut para, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_cannot_become_requests() {
        assert_eq!(text(".hidden"), "\\&.hidden");
        assert_eq!(text("'quoted"), "\\&'quoted");
        assert_eq!(text("a\\b"), "a\\eb");
        assert_eq!(inline(".x `y`"), "\\&.x \\fBy\\fR");
        assert_eq!(inline("`.x` y"), "\\fB.x\\fR y");
    }

    #[test]
    fn code_is_bold_with_minus_signs() {
        assert_eq!(
            inline("give `--lossy` or not"),
            "give \\fB\\-\\-lossy\\fR or not"
        );
        assert_eq!(literal("-l 0-2"), "\\-l 0\\-2");
    }

    #[test]
    fn markdown_paragraphs_headings_and_code() {
        let got = markdown("One\nline.\n\n## Head\n\n```\n.x = 1\n```\nTail `a`.\n").unwrap();
        assert_eq!(
            got,
            ".PP\nOne line.\n.SS Head\n.PP\n.RS 4\n.nf\n\\&.x = 1\n.fi\n.RE\n.PP\nTail \\fBa\\fR.\n"
        );
        assert!(markdown("- a list\n").is_err());
        assert!(markdown("| a | table |\n").is_err());
        assert!(markdown("```\nopen\n").is_err());
    }
}
