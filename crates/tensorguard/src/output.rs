//! Terminal output: colour only on a TTY and when NO_COLOR is unset.

use std::io::{IsTerminal, Write};

use console::Style;

pub struct Output {
    pub json: bool,
    color: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = !json && !no_color && std::io::stdout().is_terminal();
        console::set_colors_enabled(color);
        console::set_colors_enabled_stderr(color && std::io::stderr().is_terminal());
        Self { json, color }
    }

    fn paint(&self, style: Style, s: &str) -> String {
        if self.color {
            style.apply_to(s).to_string()
        } else {
            s.to_owned()
        }
    }

    pub fn bold(&self, s: &str) -> String {
        self.paint(Style::new().bold(), s)
    }

    pub fn green(&self, s: &str) -> String {
        self.paint(Style::new().green(), s)
    }

    pub fn red(&self, s: &str) -> String {
        self.paint(Style::new().red().bold(), s)
    }

    pub fn yellow(&self, s: &str) -> String {
        self.paint(Style::new().yellow(), s)
    }

    /// One line on stdout (a closed pipe is not an error worth a panic).
    pub fn line(&self, s: &str) {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{s}");
    }

    /// A progress note on stderr (stdout stays for results).
    pub fn note(&self, s: &str) {
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "{s}");
    }

    /// A JSON value on stdout, pretty-printed.
    pub fn json_value(&self, v: &serde_json::Value) {
        let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
        self.line(&text);
    }
}
