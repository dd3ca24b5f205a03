//! `man`: the pages clap writes from the command definitions, and rootpack-recipe(5),
//! rendered from `docs/recipe.md` so the page and the document are one text.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

const RECIPE: &str = include_str!("../../docs/recipe.md");

pub fn man(install: Option<&Path>, recipe: bool, quiet: bool) -> Result<()> {
    let Some(dir) = install else {
        let mut out = io::stdout().lock();
        let written = match recipe {
            true => out.write_all(recipe_page().as_bytes()),
            false => clap_mangen::Man::new(Cli::command()).render(&mut out),
        };
        return match written.and_then(|()| out.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        };
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing into {}", dir.display()))?;
    // Section 5 beside section 1 (`…/man1` -> `…/man5`), else in the same folder.
    let five = match dir.file_name() {
        Some(n) if n == "man1" => dir.with_file_name("man5"),
        _ => dir.to_path_buf(),
    };
    std::fs::create_dir_all(&five).with_context(|| format!("creating {}", five.display()))?;
    let page = five.join("rootpack-recipe.5");
    std::fs::write(&page, recipe_page()).with_context(|| format!("writing {}", page.display()))?;
    if !quiet {
        eprintln!(
            "rootpack: wrote rootpack.1 and a page per command into {}, and {}",
            dir.display(),
            page.display()
        );
    }
    Ok(())
}

/// docs/recipe.md as roff: headings, paragraphs, the key table as tagged paragraphs, code
/// blocks as they are.
fn recipe_page() -> String {
    let mut out = format!(
        ".TH ROOTPACK-RECIPE 5 \"\" \"rootpack {}\" \"File Formats\"\n",
        env!("CARGO_PKG_VERSION")
    );
    out += ".SH NAME\nrootpack-recipe \\- the recipe file rootpack build reads\n";
    let mut in_code = false;
    // A paragraph's lines, rendered together (inline code may span two lines).
    let mut para: Vec<&str> = Vec::new();
    let flush = |para: &mut Vec<&str>, out: &mut String| {
        if !para.is_empty() {
            *out += &format!(".PP\n{}\n", inline(&para.join(" ")));
            para.clear();
        }
    };
    for line in RECIPE.lines() {
        if line.starts_with("```") {
            flush(&mut para, &mut out);
            in_code = !in_code;
            out += if in_code { ".PP\n.nf\n" } else { ".fi\n" };
        } else if in_code {
            out += &escape(line);
            out.push('\n');
        } else if let Some(h) = line.strip_prefix("## ") {
            flush(&mut para, &mut out);
            out += &format!(".SH {}\n", h.to_uppercase());
        } else if let Some(row) = line.strip_prefix("| ") {
            flush(&mut para, &mut out);
            let cells: Vec<&str> = row.trim_end_matches('|').split(" | ").collect();
            if cells.len() >= 2 && cells[0] != "key" && !cells[0].starts_with("---") {
                let text = cells[1..].join(" | ");
                out += &format!(".TP\n{}\n{}\n", inline(cells[0]), inline(text.trim()));
            }
        } else if line.trim().is_empty() {
            flush(&mut para, &mut out);
        } else if !line.starts_with("# ") {
            para.push(line.trim());
        }
    }
    flush(&mut para, &mut out);
    out
}

/// Backslashes escaped, and a line that roff would take for a request guarded.
fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\e");
    match s.starts_with('.') || s.starts_with('\'') {
        true => format!("\\&{s}"),
        false => s,
    }
}

/// `code` in bold, [text](link) as its text, **strong** in bold.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c == '`'
            && let Some(end) = rest[1..].find('`')
        {
            out += &format!("\\fB{}\\fR", escape_inline(&rest[1..1 + end]));
            rest = &rest[end + 2..];
        } else if c == '['
            && let Some(close) = rest.find("](")
            && let Some(end) = rest[close..].find(')')
        {
            out += &inline(&rest[1..close]);
            rest = &rest[close + end + 1..];
        } else if let Some(after) = rest.strip_prefix("**")
            && let Some(end) = after.find("**")
        {
            out += &format!("\\fB{}\\fR", escape_inline(&after[..end]));
            rest = &after[end + 2..];
        } else {
            out += &escape_inline(&c.to_string());
            rest = &rest[c.len_utf8()..];
        }
    }
    escape(&out).replace("\\e", "\\")
}

fn escape_inline(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_of_the_document_is_in_the_page() {
        let page = super::recipe_page();
        for key in [
            "layer.oci",
            "after_steps",
            "[modules]",
            "run.timeout",
            "[output]",
        ] {
            assert!(page.contains(&key.replace('-', "\\-")), "{key}");
        }
        assert!(page.starts_with(".TH ROOTPACK-RECIPE 5"));
        assert!(!page.lines().any(|l| l.starts_with("| ")));
    }
}
