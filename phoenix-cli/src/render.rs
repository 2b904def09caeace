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

/// The keys whose string values are secrets (`Secret` fields of the configuration types), for files
/// whose secrets no warning has located yet: semantic checks, where the warning comes from, do not run
/// while a file has schema errors, but a code frame near the secret would still show it.
const SECRET_KEYS: [&str; 3] = ["admin_password", "password", "token_secret"];

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

/// Makes miette render the errors that end a command as wide as `COLUMNS` says, as problems are.
pub(crate) fn init_error_hook() {
    if let Some(width) = terminal_width() {
        let _ = miette::set_hook(Box::new(move |_| {
            Box::new(miette::MietteHandlerOpts::new().width(width).build())
        }));
    }
}

/// Prints the error that ended a command on standard error, for people.
pub(crate) fn error_human(report: &miette::Report) {
    match report.downcast_ref::<Invalid>() {
        Some(invalid) => {
            eprint!(
                "{}",
                human(&invalid.problems, &invalid.sources, stderr_is_terminal())
            );
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
        for problem in problems
            .iter()
            .filter(|problem| problem.code() == PLAINTEXT_SECRET)
        {
            let (Some(path), Some(labels)) = (problem.to_record().file, problem.labels()) else {
                continue;
            };
            for label in labels {
                spans
                    .entry(path.clone())
                    .or_default()
                    .push((label.offset(), label.len()));
            }
        }
        // Only files that a code frame will show are searched for secrets by key, each once.
        let mut searched = std::collections::BTreeSet::new();
        for problem in problems.iter().filter(|problem| problem.source_code().is_some()) {
            let Some(path) = problem.to_record().file else {
                continue;
            };
            if let Some(file) = sources.iter().find(|source| source.path() == path)
                && searched.insert(path.clone())
            {
                spans.entry(path).or_default().extend(secrets_by_key(file));
            }
        }
        let mut by_path = BTreeMap::new();
        for (path, mut ranges) in spans {
            let Some(file) = sources.iter().find(|source| source.path() == path) else {
                continue;
            };
            ranges.sort_unstable();
            ranges.dedup();
            if !ranges.is_empty() {
                by_path.insert(path.clone(), MaskedSource::new(&path, file.text(), &ranges));
            }
        }
        MaskedSources { by_path }
    }

    fn of<'a>(&'a self, problem: &'a Problem) -> Option<Masked<'a>> {
        let path = problem.to_record().file?;
        let file = self.by_path.get(&path)?;
        Some(Masked { problem, file })
    }
}

/// The byte ranges of the string values at [`SECRET_KEYS`], and of the `value` of each stack variable
/// (an object with a `name` and a `value`), in a file that parses as JSON.
fn secrets_by_key(file: &SourceFile) -> Vec<(usize, usize)> {
    fn walk(value: &serde_json::Value, pointer: &str, stacks: bool, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(object) => {
                let variable = stacks && object.contains_key("name");
                for (key, child) in object {
                    let child_pointer = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                    let secret = SECRET_KEYS.contains(&key.as_str()) || (variable && key == "value");
                    if secret && child.is_string() {
                        found.push(child_pointer);
                    } else {
                        walk(child, &child_pointer, stacks, found);
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    walk(item, &format!("{pointer}/{index}"), stacks, found);
                }
            }
            _ => {}
        }
    }
    let mut parsed = file.clone();
    if parsed.parse().is_err() {
        return Vec::new();
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(parsed.text()) else {
        return Vec::new();
    };
    let mut pointers = Vec::new();
    walk(
        &value,
        "",
        file.kind() == phoenix_core::FileKind::Stacks,
        &mut pointers,
    );
    pointers
        .iter()
        .filter_map(|pointer| parsed.locate(pointer))
        .map(|location| (location.value.start, location.value.len()))
        .collect()
}

impl MaskedSource {
    fn new(path: &str, text: &str, ranges: &[(usize, usize)]) -> MaskedSource {
        let mut masked = String::with_capacity(text.len());
        let mut regions = Vec::new();
        let mut copied = 0;
        for &(start, length) in ranges {
            let end = start + length;
            // Overlapping or out-of-place ranges cannot come from one file's warnings; skip rather than guess.
            if start < copied
                || end > text.len()
                || !text.is_char_boundary(start)
                || !text.is_char_boundary(end)
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
                return (start
                    + if is_end {
                        region.replacement.len() as isize
                    } else {
                        0
                    }) as usize;
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
        Diagnostic::code(self.problem)
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
        assert_eq!(masked.source.inner(), r#"{"a": "(sensitive)", "b": 1}"#);
        assert_eq!(masked.shift(secret, false), secret);
        assert_eq!(masked.shift(secret + 9, true), secret + 13);
        let b = text.find("\"b\"").expect("present");
        assert_eq!(masked.shift(b, false), b + 4);
        assert_eq!(masked.shift(2, false), 2);
    }
}
