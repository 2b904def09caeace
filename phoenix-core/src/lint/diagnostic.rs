//! Problems found in a configuration: what, where (file, JSON pointer, line, column) and how to fix it.
//!
//! A [`Problem`] is found against a JSON pointer and later placed in its file; it is then a
//! [`miette::Diagnostic`] with a labelled span, and serialises to the `--output json` form.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;

use crate::config::FileKind;
use crate::lint::source::SourceFile;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The configuration is unusable until this is fixed.
    Error,
    /// The configuration works, but something deserves attention.
    Warning,
}

/// What part of the located JSON a label points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The value at the pointer.
    Value,
    /// The object key naming the value (for unknown or legacy keys).
    Key,
}

/// One problem in a configuration directory.
#[derive(Debug, Clone)]
pub struct Problem {
    severity: Severity,
    code: &'static str,
    message: String,
    file: Option<FileKind>,
    pointer: String,
    target: Target,
    label: Option<String>,
    help: Option<String>,
    placed: Option<Box<Placed>>,
}

#[derive(Debug, Clone)]
struct Placed {
    path: String,
    source: NamedSource<Arc<String>>,
    span: Option<(usize, usize)>,
    line: usize,
    column: usize,
}

impl Problem {
    /// An error at `pointer` in `file`.
    pub fn error(
        code: &'static str,
        file: FileKind,
        pointer: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem::new(Severity::Error, code, Some(file), pointer.into(), message.into())
    }

    /// A warning at `pointer` in `file`.
    pub fn warning(
        code: &'static str,
        file: FileKind,
        pointer: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem::new(
            Severity::Warning,
            code,
            Some(file),
            pointer.into(),
            message.into(),
        )
    }

    /// A problem with the configuration directory as a whole (a missing file, say).
    pub fn directory(code: &'static str, message: impl Into<String>) -> Problem {
        Problem::new(Severity::Error, code, None, String::new(), message.into())
    }

    fn new(
        severity: Severity,
        code: &'static str,
        file: Option<FileKind>,
        pointer: String,
        message: String,
    ) -> Problem {
        Problem {
            severity,
            code,
            message,
            file,
            pointer,
            target: Target::Value,
            label: None,
            help: None,
            placed: None,
        }
    }

    /// Sets the text of the label on the offending value.
    pub fn with_label(mut self, label: impl Into<String>) -> Problem {
        self.label = Some(label.into());
        self
    }

    /// Sets the help line: what to do about it.
    pub fn with_help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }

    /// Points the label at the key instead of the value.
    pub fn on_key(mut self) -> Problem {
        self.target = Target::Key;
        self
    }

    /// How bad it is.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// Stable code, `phoenix::<area>::<what>`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The file, when the problem lies inside one.
    pub fn file(&self) -> Option<FileKind> {
        self.file
    }

    /// JSON pointer of the offending value.
    pub fn pointer(&self) -> &str {
        &self.pointer
    }

    /// The help line.
    pub fn help_text(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// The 1-based line and column, once placed in its file.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        self.placed.as_ref().map(|placed| (placed.line, placed.column))
    }

    /// Places the problem in its file: resolves the pointer to a span, a line and a column.
    ///
    /// A pointer that names nothing (a default merged in, a list of one written as the object itself) is
    /// placed at the closest thing that exists: the pointer without a `/0` step, else its nearest ancestor.
    pub(crate) fn place(&mut self, file: &SourceFile) {
        let mut location = file.locate(&self.pointer);
        let mut target = self.target;
        if location.is_none() && self.pointer.contains("/0/") {
            let single = self.pointer.replacen("/0/", "/", 1);
            location = file.locate(&single);
            if location.is_some() {
                self.pointer = single;
            }
        }
        let mut ancestor = self.pointer.as_str();
        while location.is_none() && !ancestor.is_empty() {
            ancestor = ancestor.rsplit_once('/').map_or("", |(parent, _)| parent);
            location = file.locate(ancestor);
            target = Target::Key;
        }
        let span = location.map(|location| match (target, location.key) {
            (Target::Key, Some(key)) => key,
            _ => location.value,
        });
        self.place_at(file, span.map(|range| (range.start, range.len())));
    }

    /// Places the problem at a byte offset (for syntax errors, which have no pointer).
    pub(crate) fn place_at(&mut self, file: &SourceFile, span: Option<(usize, usize)>) {
        let position = file.line_column(span.map_or(0, |(offset, _)| offset));
        self.placed = Some(Box::new(Placed {
            path: file.path().to_owned(),
            source: file.named_source(),
            span,
            line: position.line,
            column: position.column,
        }));
    }

    /// The machine-readable form used by `--output json`.
    pub fn to_record(&self) -> ProblemRecord<'_> {
        let file = match (&self.placed, self.file) {
            (Some(placed), _) => Some(placed.path.clone()),
            (None, Some(kind)) => Some(kind.file_name().to_owned()),
            (None, None) => None,
        };
        ProblemRecord {
            file,
            pointer: &self.pointer,
            line: self.placed.as_ref().map(|placed| placed.line),
            column: self.placed.as_ref().map(|placed| placed.column),
            severity: self.severity,
            code: self.code,
            message: &self.message,
            help: self.help.as_deref(),
        }
    }
}

/// One problem as `phoenix validate --output json` prints it (format version 1).
#[derive(Debug, Serialize)]
pub struct ProblemRecord<'a> {
    /// Path of the file, as given on the command line.
    pub file: Option<String>,
    /// JSON pointer of the offending value (empty for the whole document).
    pub pointer: &'a str,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column, in characters.
    pub column: Option<usize>,
    /// `error` or `warning`.
    pub severity: Severity,
    /// Stable code, `phoenix::<area>::<what>`.
    pub code: &'a str,
    /// What is wrong.
    pub message: &'a str,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<&'a str>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        let pointer = (!self.pointer.is_empty()).then(|| format!("at {}", self.pointer));
        match (&self.help, pointer) {
            (Some(help), Some(pointer)) => Some(Box::new(format!("{help}\n{pointer}"))),
            (Some(help), None) => Some(Box::new(help)),
            (None, Some(pointer)) => Some(Box::new(pointer)),
            (None, None) => None,
        }
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        let placed = self.placed.as_ref()?;
        placed.span?;
        Some(&placed.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (offset, length) = self.placed.as_ref()?.span?;
        let label = LabeledSpan::new(self.label.clone(), offset, length);
        Some(Box::new(std::iter::once(label)))
    }
}
