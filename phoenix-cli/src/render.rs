//! Rendering problems for people (miette's graphical handler) and for machines (JSON).

use std::io::IsTerminal;

use miette::{GraphicalReportHandler, GraphicalTheme};
use phoenix_core::Problem;

/// Renders problems as miette diagnostics; colour only on a terminal and never with `NO_COLOR`.
pub(crate) fn human(problems: &[Problem], to_terminal: bool) -> String {
    let colour = to_terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let theme = if colour {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let width = terminal_width().unwrap_or(100);
    let handler = GraphicalReportHandler::new_themed(theme).with_width(width);
    let mut out = String::new();
    for problem in problems {
        handler
            .render_report(&mut out, problem)
            .expect("rendering into a String cannot fail");
        out.push('\n');
    }
    out
}

/// Renders problems as the JSON array of `--output json`.
pub(crate) fn json(problems: &[Problem]) -> String {
    let records: Vec<_> = problems.iter().map(Problem::to_record).collect();
    serde_json::to_string_pretty(&records).expect("problem records serialise")
}

/// Whether standard error is a terminal.
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

fn terminal_width() -> Option<usize> {
    std::env::var("COLUMNS").ok()?.parse().ok()
}

/// Whether standard output takes colour: a terminal, and `NO_COLOR` unset or empty.
pub(crate) fn stdout_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}
