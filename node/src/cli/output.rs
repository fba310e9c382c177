//! Output: aligned tables for people, JSON for scripts.

use std::io::Write;

use serde_json::Value;

use super::error::{CliError, Result};

/// Print `rows` under `headers` with columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let mut line = |cells: Vec<&str>| -> Result<()> {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                s.push_str(&format!("{c:<pad$}  "));
            }
        }
        writeln!(out, "{}", s.trim_end()).map_err(CliError::output)
    };
    line(headers.to_vec())?;
    for row in rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

/// Print one JSON document.
pub fn json(v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::Local(format!("encoding JSON: {e}")))?;
    writeln!(std::io::stdout().lock(), "{text}").map_err(CliError::output)
}

/// Print a line of text.
pub fn line(s: &str) -> Result<()> {
    writeln!(std::io::stdout().lock(), "{s}").map_err(CliError::output)
}
