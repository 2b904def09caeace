//! Rendering problems for people (miette's graphical handler) and for machines (JSON), and the errors that
//! end a command: as miette reports, or as one JSON document under `--output json`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use phoenix_core::{Problem, SourceFile};
use serde_json::json;

use crate::load::Invalid;

/// The code of the warning about a secret written inline, whose value no code frame shows.
const PLAINTEXT_SECRET: &str = "phoenix::config::plaintext_secret";

/// What a code frame shows instead of an inline secret, as plans do.
const MASK: &str = "(sensitive)";

/// Version of the JSON error document.
const ERROR_FORMAT_VERSION: u32 = 1;

/// Renders problems as miette diagnostics; colour only on a terminal and never with `NO_COLOR`.
///
/// Inline secrets (the values the plaintext-secret warnings point at) are masked in every code frame of
/// their file, not only in the warning's own: a neighbouring problem's context lines would show them too.
pub(crate) fn human(problems: &[Problem], sources: &[SourceFile], to_terminal: bool) -> String {
    let colour = to_terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let theme = if colour {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let width = terminal_width().unwrap_or(100);
    let handler = GraphicalReportHandler::new_themed(theme).with_width(width);
    let masked = MaskedSources::new(problems, sources);
    let mut out = String::new();
    for problem in problems {
        let rendered = match masked.of(problem) {
            Some(masked) => handler.render_report(&mut out, &masked),
            None => handler.render_report(&mut out, problem),
        };
        rendered.expect("rendering into a String cannot fail");
        out.push('\n');
    }
    out
}

/// Renders problems as the JSON array of `--output json`.
pub(crate) fn json(problems: &[Problem]) -> String {
    let records: Vec<_> = problems.iter().map(Problem::to_record).collect();
    serde_json::to_string_pretty(&records).expect("problem records serialise")
}

/// Prints the error that ended a command on standard error, for people.
pub(crate) fn error_human(report: &miette::Report) {
    match report.downcast_ref::<Invalid>() {
        Some(invalid) => {
            eprint!("{}", human(&invalid.problems, &invalid.sources, stderr_is_terminal()));
            eprintln!("{invalid}.");
        }
        None => eprintln!("{report:?}"),
    }
}

/// The error that ended a command as the one JSON document of `--output json`. For `validate`, whose
/// document is a list of problems, it is a list of one problem record; for the other commands an object
/// with `format_version`, `error` (`code`, `message`, `help`, `causes`) and, when the configuration did
/// not validate, `problems`.
pub(crate) fn error_json(report: &miette::Report, as_problems: bool) -> String {
    let code = report
        .code()
        .map_or_else(|| "phoenix::failed".to_owned(), |code| code.to_string());
    let help = report.help().map(|help| help.to_string());
    let causes: Vec<String> = report.chain().skip(1).map(ToString::to_string).collect();
    let document = if as_problems {
        let message = std::iter::once(report.to_string())
            .chain(causes.iter().cloned())
            .collect::<Vec<_>>()
            .join(": ");
        json!([{
            "file": null, "pointer": "", "line": null, "column": null,
            "severity": "error", "code": code, "message": message, "help": help,
        }])
    } else {
        let mut document = json!({
            "format_version": ERROR_FORMAT_VERSION,
            "error": {"code": code, "message": report.to_string(), "help": help, "causes": causes},
        });
        if let Some(invalid) = report.downcast_ref::<Invalid>() {
            let records: Vec<_> = invalid.problems.iter().map(Problem::to_record).collect();
            document["problems"] = serde_json::to_value(records).expect("problem records serialise");
        }
        document
    };
    serde_json::to_string_pretty(&document).expect("the error document serialises")
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

/// The files holding inline secrets, with those secrets masked.
struct MaskedSources {
    by_path: BTreeMap<String, MaskedSource>,
}

struct MaskedSource {
    source: NamedSource<String>,
    /// The masked byte ranges of the original text, in order, each with its replacement.
    regions: Vec<Region>,
}

#[derive(Clone, Copy)]
struct Region {
    start: usize,
    length: usize,
    replacement: &'static str,
}

/// A problem whose code frame is drawn from a masked copy of its file.
struct Masked<'a> {
    problem: &'a Problem,
    file: &'a MaskedSource,
}

impl MaskedSources {
    fn new(problems: &[Problem], sources: &[SourceFile]) -> MaskedSources {
        let mut spans: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
        for problem in problems.iter().filter(|problem| problem.code() == PLAINTEXT_SECRET) {
            let (Some(path), Some(labels)) = (problem.to_record().file, problem.labels()) else {
                continue;
            };
            for label in labels {
                spans.entry(path.clone()).or_default().push((label.offset(), label.len()));
            }
        }
        let mut by_path = BTreeMap::new();
        for (path, mut ranges) in spans {
            let Some(file) = sources.iter().find(|source| source.path() == path) else {
                continue;
            };
            ranges.sort_unstable();
            by_path.insert(path.clone(), MaskedSource::new(&path, file.text(), &ranges));
        }
        MaskedSources { by_path }
    }

    fn of<'a>(&'a self, problem: &'a Problem) -> Option<Masked<'a>> {
        let path = problem.to_record().file?;
        let file = self.by_path.get(&path)?;
        Some(Masked { problem, file })
    }
}

impl MaskedSource {
    fn new(path: &str, text: &str, ranges: &[(usize, usize)]) -> MaskedSource {
        let mut masked = String::with_capacity(text.len());
        let mut regions = Vec::new();
        let mut copied = 0;
        for &(start, length) in ranges {
            let end = start + length;
            // Overlapping or out-of-place ranges cannot come from one file's warnings; skip rather than guess.
            if start < copied || end > text.len() || !text.is_char_boundary(start) || !text.is_char_boundary(end)
            {
                continue;
            }
            let replacement = if text[start..end].starts_with('"') {
                "\"(sensitive)\""
            } else {
                MASK
            };
            masked.push_str(&text[copied..start]);
            masked.push_str(replacement);
            copied = end;
            regions.push(Region {
                start,
                length,
                replacement,
            });
        }
        masked.push_str(&text[copied..]);
        MaskedSource {
            source: NamedSource::new(path, masked).with_language("JSON"),
            regions,
        }
    }

    /// Where an offset of the original text lies in the masked text; an offset inside a masked region goes
    /// to the start of its replacement, or to its end for the end of a span.
    fn shift(&self, offset: usize, is_end: bool) -> usize {
        let mut shifted = offset as isize;
        for region in &self.regions {
            let region_end = region.start + region.length;
            if offset <= region.start {
                break;
            }
            let growth = region.replacement.len() as isize - region.length as isize;
            if offset >= region_end {
                shifted += growth;
            } else {
                let start = shifted - (offset - region.start) as isize;
                return (start + if is_end { region.replacement.len() as isize } else { 0 }) as usize;
            }
        }
        shifted as usize
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.problem, f)
    }
}

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.problem, f)
    }
}

impl std::error::Error for Masked<'_> {}

impl Diagnostic for Masked<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.problem.code()
    }

    fn severity(&self) -> Option<miette::Severity> {
        Diagnostic::severity(self.problem)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.problem.help()
    }

    fn url<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.problem.url()
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.problem.source_code()?;
        Some(&self.file.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let labels = self.problem.labels()?.map(|label| {
            let start = self.file.shift(label.offset(), false);
            let end = self.file.shift(label.offset() + label.len(), true);
            LabeledSpan::new(label.label().map(str::to_owned), start, end - start)
        });
        Some(Box::new(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::MaskedSource;

    #[test]
    fn masking_shifts_offsets_after_the_secret_and_maps_the_secret_to_its_mask() {
        let text = r#"{"a": "hunter2", "b": 1}"#;
        let secret = text.find("\"hunter2\"").expect("present");
        let masked = MaskedSource::new("f.json", text, &[(secret, 9)]);
        let shown = miette::SourceCode::read_span(&masked.source, &(0, 1).into(), 0, 0)
            .expect("readable")
            .data()
            .to_vec();
        let shown = String::from_utf8(shown).expect("utf-8");
        assert_eq!(shown, r#"{"a": "(sensitive)", "b": 1}"#);
        assert_eq!(masked.shift(secret, false), secret);
        assert_eq!(masked.shift(secret + 9, true), secret + 13);
        let b = text.find("\"b\"").expect("present");
        assert_eq!(masked.shift(b, false), b + 4);
        assert_eq!(masked.shift(2, false), 2);
    }
}
