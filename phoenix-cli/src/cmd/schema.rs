//! `phoenix schema [NAME]`: prints the embedded JSON Schemas.

use crate::exit::Exit;

use phoenix_core::lint::schema::{SCHEMAS, Schema};

use crate::args::SchemaArgs;

pub(crate) fn run(args: &SchemaArgs) -> miette::Result<Exit> {
    let Some(name) = &args.name else {
        for schema in &SCHEMAS {
            println!(
                "{:<11} {:<32} {}",
                schema.kind.short_name(),
                schema.kind.file_name(),
                schema.file_name
            );
        }
        return Ok(Exit::Success);
    };
    let schema = Schema::find(name).ok_or_else(|| {
        let names: Vec<&str> = SCHEMAS.iter().map(|schema| schema.kind.short_name()).collect();
        miette::miette!(
            code = "phoenix::schema::unknown_name",
            help = format!("use one of: {}", names.join(", ")),
            "there is no schema named `{name}`"
        )
    })?;
    print!("{}", schema.text);
    Ok(Exit::Success)
}
