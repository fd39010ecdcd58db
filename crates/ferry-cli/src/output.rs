//! Terminal output: aligned tables, JSON, progress bars.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Prints rows as left-aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(header, rows));
}

pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Whether the command line asked for JSON output. Read from the raw arguments so that an
/// error found before (or while) the flags are parsed is still reported as JSON.
pub fn json_requested() -> bool {
    std::env::args_os().skip(1).any(|a| a == "--json")
}

/// An error as the API reports one: `{"error": {"code", "message"}}`, on stdout, where the
/// command's JSON answer would have been.
pub fn json_error(code: &str, message: &str) {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    println!("{body:#}");
}

/// The stable code of an error, for `--json`: the API's codes (`not_found`, `invalid`,
/// `refused`, `conflict`, `unavailable`, `internal`) where the error says which, else `error`.
pub fn error_code(e: &anyhow::Error) -> &'static str {
    for cause in e.chain() {
        if let Some(ops) = cause.downcast_ref::<ferry_api::OpsError>() {
            return ops.code();
        }
        if let Some(store) = cause.downcast_ref::<ferry_store::StoreError>() {
            return ferry_api::OpsError::code_of_store(store);
        }
    }
    "error"
}

/// A progress bar on stderr, hidden when stderr is not a terminal (CI, pipes).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Thousands separators, for row counts people read.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let out = render_table(
            &["phase", "tenants"],
            &[
                vec!["legacy".into(), "10".into()],
                vec!["target_primary".into(), "1".into()],
            ],
        );
        assert_eq!(
            out,
            "phase           tenants\nlegacy          10\ntarget_primary  1\n"
        );
    }

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
    }
}
