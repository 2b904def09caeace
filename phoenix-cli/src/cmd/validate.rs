//! `phoenix validate`: every problem of a configuration directory, for people or as JSON.

use crate::exit::Exit;

use phoenix_core::{Severity, validate};

use crate::args::{GlobalArgs, OutputFormat, ValidateArgs};
use crate::{load, render};

pub(crate) fn run(args: &ValidateArgs, global: &GlobalArgs) -> miette::Result<Exit> {
    let dir = load::read(&global.config)?;
    // Sources share their text: the renderer keeps them to mask inline secrets in code frames.
    let sources = dir.sources.clone();
    let validation = validate(dir.sources, &dir.options);
    match args.output {
        OutputFormat::Json => println!("{}", render::json(validation.problems())),
        OutputFormat::Human => {
            eprint!(
                "{}",
                render::human(validation.problems(), &sources, render::stderr_is_terminal())
            );
            let errors = validation.count(Severity::Error);
            let warnings = validation.count(Severity::Warning);
            let guests = validation.estate().map_or(0, |estate| estate.guests().len());
            if errors == 0 {
                eprintln!(
                    "{} is valid: {guests} guest{}, {warnings} warning{}",
                    global.config.display(),
                    plural(guests),
                    plural(warnings)
                );
            } else {
                eprintln!(
                    "{} is not valid: {errors} error{}, {warnings} warning{}",
                    global.config.display(),
                    plural(errors),
                    plural(warnings)
                );
            }
        }
    }
    Ok(if validation.has_errors() {
        Exit::Failure
    } else {
        Exit::Success
    })
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}
