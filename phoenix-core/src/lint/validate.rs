//! The validation pipeline: parse -> schema -> typed -> resolve -> semantic checks, collecting every problem.

use serde::de::DeserializeOwned;

use crate::config::{ConfigFiles, FileKind};
use crate::lint::checks::{self, CheckOptions};
use crate::lint::diagnostic::{Problem, Severity};
use crate::lint::schema;
use crate::lint::source::SourceFile;
use crate::model::Estate;

/// The outcome of validating a configuration directory.
#[derive(Debug)]
pub struct Validation {
    problems: Vec<Problem>,
    estate: Option<Estate>,
}

impl Validation {
    /// Every problem, ordered by file, then position.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The resolved estate, when the files could be read into the typed model (even with semantic errors).
    pub fn estate(&self) -> Option<&Estate> {
        self.estate.as_ref()
    }

    /// Consumes the validation, returning the estate only when there is no error.
    pub fn into_estate(self) -> Result<Estate, Vec<Problem>> {
        match (self.has_errors(), self.estate) {
            (false, Some(estate)) => Ok(estate),
            _ => Err(self.problems),
        }
    }

    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.count(Severity::Error) > 0
    }

    /// How many problems of a severity there are.
    pub fn count(&self, severity: Severity) -> usize {
        self.problems
            .iter()
            .filter(|problem| problem.severity() == severity)
            .count()
    }
}

/// Validates the files of a configuration directory. `sources` holds the files that exist; a required file
/// that is missing is reported. Never touches the file system or the network.
pub fn validate(sources: Vec<SourceFile>, options: &CheckOptions) -> Validation {
    let mut sources = sources;
    let mut problems = Vec::new();
    let mut files = ConfigFiles::default();
    let mut all_typed = true;

    for kind in FileKind::ALL {
        let Some(source) = sources.iter_mut().find(|source| source.kind() == kind) else {
            if kind.is_required() {
                all_typed = false;
                problems.push(
                    Problem::directory(
                        "phoenix::config::missing_file",
                        format!("the configuration directory has no {}", kind.file_name()),
                    )
                    .with_help("point --config at the directory holding the four files, or create this one"),
                );
            }
            continue;
        };
        let typed = match source.parse() {
            Err(error) => {
                problems.push(syntax_problem(source, &error));
                false
            }
            Ok(()) => {
                let unique = check_duplicate_keys(source, &mut problems);
                read_file(source, unique, &mut files, &mut problems) && unique
            }
        };
        all_typed &= typed;
    }

    let mut estate = None;
    if all_typed {
        checks::check_written(&files, &mut problems);
        let (resolved, resolve_problems) = Estate::resolve(files);
        problems.extend(resolve_problems);
        problems.extend(checks::check(&resolved, options));
        estate = Some(resolved);
    }

    for problem in &mut problems {
        if let Some(source) = problem
            .file()
            .and_then(|kind| sources.iter().find(|source| source.kind() == kind))
            && problem.line_column().is_none()
        {
            problem.place(source);
        }
    }
    problems.sort_by(|left, right| {
        let key = |problem: &Problem| (problem.file(), problem.line_column(), problem.severity());
        key(left).cmp(&key(right))
    });
    Validation { problems, estate }
}

/// Checks one parsed file against its schema and, when its keys are `unique`, reads it into the typed model;
/// false on any error.
fn read_file(
    source: &mut SourceFile,
    unique: bool,
    files: &mut ConfigFiles,
    problems: &mut Vec<Problem>,
) -> bool {
    let kind = source.kind();
    let Some(document) = source.document() else {
        return false;
    };
    let schema_problems = schema::check(kind, document);
    if !schema_problems.is_empty() || !unique {
        problems.extend(schema_problems);
        return false;
    }
    // Problems found from here on are few, if any: placing them scans the text again, which costs less
    // than keeping the tape beside the typed model.
    source.release_tape();
    let text = source.text();
    match kind {
        FileKind::Hypervisor => typed(kind, text, problems).map(|file| files.hypervisor = file),
        FileKind::Lxc => typed(kind, text, problems).map(|file| files.lxc = file),
        FileKind::Vm => typed(kind, text, problems).map(|file| files.vm = file),
        FileKind::Stacks => typed(kind, text, problems).map(|file| files.stacks = file),
    }
    .is_some()
}

/// Deserialises a schema-valid document from its text. A failure here means the schema and the Rust types
/// disagree.
fn typed<T: DeserializeOwned>(kind: FileKind, text: &str, problems: &mut Vec<Problem>) -> Option<T> {
    // The fast path; the slower path-tracking deserializer runs only to explain a failure.
    if let Ok(typed) = serde_json::from_str(text) {
        return Some(typed);
    }
    let result =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text)).map_err(|error| {
            let pointer: String = error
                .path()
                .iter()
                .map(|segment| match segment {
                    serde_path_to_error::Segment::Seq { index } => format!("/{index}"),
                    serde_path_to_error::Segment::Map { key } => {
                        format!("/{}", schema::escape_pointer_token(key))
                    }
                    serde_path_to_error::Segment::Enum { variant } => format!("/{variant}"),
                    serde_path_to_error::Segment::Unknown => String::new(),
                })
                .collect();
            Problem::error(
                "phoenix::config::invalid",
                kind,
                pointer,
                error.into_inner().to_string(),
            )
            .with_label("cannot be read")
            .with_help("the schema accepted this value but the Rust types did not: please report it as a bug")
        });
    result.map_err(|problem| problems.push(problem)).ok()
}

/// Reports keys written twice in one object; returns whether there were none.
fn check_duplicate_keys(source: &SourceFile, problems: &mut Vec<Problem>) -> bool {
    for duplicate in source.duplicate_keys() {
        let key = duplicate.pointer.rsplit('/').next().unwrap_or_default();
        let mut problem = Problem::error(
            "phoenix::json::duplicate_key",
            source.kind(),
            duplicate.pointer.clone(),
            format!("key `{key}` appears twice in the same object"),
        )
        .with_label("second occurrence")
        .with_help("JSON readers keep only one of the values: delete one occurrence");
        problem.place_at(source, Some((duplicate.key.start, duplicate.key.len())));
        problems.push(problem);
    }
    source.duplicate_keys().is_empty()
}

fn syntax_problem(source: &SourceFile, error: &serde_json::Error) -> Problem {
    let full = error.to_string();
    let message = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(message, _)| message);
    let offset = source.offset_of(error.line(), error.column());
    let mut problem = Problem::error(
        "phoenix::json::syntax",
        source.kind(),
        "",
        format!("{} is not valid JSON: {message}", source.kind().file_name()),
    )
    .with_label(message.to_owned());
    if message.contains("trailing comma") {
        problem = problem.with_help("JSON allows no comma after the last item: remove it");
    }
    // serde_json stops just after the offending character; step back onto it.
    let mut offset = offset.saturating_sub(usize::from(error.column() > 0));
    if message.contains("trailing comma") {
        offset = trailing_comma_before(source.text(), offset).unwrap_or(offset);
    }
    problem.place_at(source, Some((offset, 1)));
    problem
}

/// Finds the comma before the closing bracket at `offset`, skipping whitespace.
fn trailing_comma_before(text: &str, offset: usize) -> Option<usize> {
    let before = text.get(..offset)?;
    let trimmed = before.trim_end();
    trimmed.ends_with(',').then(|| trimmed.len() - 1)
}
