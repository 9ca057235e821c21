//! A report's two renderings, Markdown and HTML, and writing them.

use std::path::{Path, PathBuf};

use super::{Block, Report, ReportError, SECTIONS};

pub(super) fn markdown(r: &Report) -> String {
    let mut out = format!("# TensorGuard compliance report — job {}\n\n", r.job);
    for (i, block) in r.blocks.iter().enumerate() {
        match block {
            Block::Heading(h) => out.push_str(&format!(
                "## {}. {h}\n\n",
                SECTIONS.iter().position(|x| x == h).map_or(i, |p| p + 1)
            )),
            Block::Para(p) => out.push_str(&format!("{p}\n\n")),
            Block::Table { head, rows } => {
                let cell = |c: &str| {
                    c.replace('\\', "\\\\")
                        .replace('|', "\\|")
                        .replace('<', "&lt;")
                        .replace(['\n', '\r'], " ")
                };
                out.push_str(&format!(
                    "| {} |\n|{}\n",
                    head.join(" | "),
                    "---|".repeat(head.len())
                ));
                if rows.is_empty() {
                    out.push_str(&format!("| (none){} |\n", " |".repeat(head.len() - 1)));
                }
                for row in rows {
                    out.push_str(&format!(
                        "| {} |\n",
                        row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                    ));
                }
                out.push('\n');
            }
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(r: &Report) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>TensorGuard compliance report — {0}</title>\n<style>body{{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #999;padding:.2em .5em;font-size:.9em;word-break:break-all}}th{{background:#eee}}</style></head><body>\n<h1>TensorGuard compliance report — job {0}</h1>\n",
        esc(&r.job)
    );
    for block in &r.blocks {
        match block {
            Block::Heading(h) => out.push_str(&format!("<h2>{}</h2>\n", esc(h))),
            Block::Para(p) => out.push_str(&format!("<p>{}</p>\n", esc(p))),
            Block::Table { head, rows } => {
                out.push_str("<table><tr>");
                for h in head {
                    out.push_str(&format!("<th>{}</th>", esc(h)));
                }
                out.push_str("</tr>\n");
                for row in rows {
                    out.push_str("<tr>");
                    for c in row {
                        out.push_str(&format!("<td>{}</td>", esc(c)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// Writes `report-<job>.md` and `.html` into `dir`.
pub fn write(r: &Report, dir: &Path) -> Result<(PathBuf, PathBuf), ReportError> {
    let io = |p: &Path, e: std::io::Error| ReportError::Write {
        path: p.to_owned(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let short = &r.job[..r.job.len().min(12)];
    let md = dir.join(format!("report-{short}.md"));
    let ht = dir.join(format!("report-{short}.html"));
    std::fs::write(&md, markdown(r)).map_err(|e| io(&md, e))?;
    std::fs::write(&ht, html(r)).map_err(|e| io(&ht, e))?;
    Ok((md, ht))
}
