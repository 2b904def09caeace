//! The local files Phoenix reads and writes, handled defensively.
//!
//! Reads accept regular files only (a symbolic link to one is fine), so a FIFO cannot block a run and a
//! link to `/dev/zero` cannot fill memory, and they stop at a size limit while reading rather than trusting
//! a `stat` taken before. Writes of state are private (mode 0600), atomic (a temporary file in the same
//! directory, then a rename) and never go through a symbolic link.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use miette::{IntoDiagnostic, WrapErr};

/// The largest configuration file read: far beyond any real estate, small enough to hold in memory.
pub(crate) const CONFIG_LIMIT: u64 = 64 << 20;

/// The largest script or template read from the configuration directory.
pub(crate) const SCRIPT_LIMIT: u64 = 4 << 20;

/// The largest demo state file read.
pub(crate) const STATE_LIMIT: u64 = 64 << 20;

/// Whether a read may follow a symbolic link at the path itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// A link to a regular file is read (configuration files).
    Follow,
    /// A link is refused (state Phoenix writes itself).
    Refuse,
}

/// Reads the text file at `path`, of at most `limit` bytes. `None` means nothing is there at all; a
/// dangling symbolic link, a FIFO, a device, a directory, a file over the limit or text that is not UTF-8
/// is an error naming the path.
pub(crate) fn read_text(path: &Path, limit: u64, links: Links) -> miette::Result<Option<String>> {
    let Some(listed) = examine(path, links)? else {
        return Ok(None);
    };
    let file = File::open(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to read {}", path.display()))?;
    // What was opened must be what was examined: a file swapped in between is refused, not read.
    let opened = file
        .metadata()
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to read {}", path.display()))?;
    ensure_regular(path, &opened)?;
    if links == Links::Refuse && (opened.dev(), opened.ino()) != (listed.dev(), listed.ino()) {
        return Err(changed_while_reading(path));
    }
    // Sized from the metadata, so that a large file is read into one allocation, not into a doubling one.
    let expected = usize::try_from(opened.len().min(limit)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(expected.saturating_add(1));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to read {}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(miette::miette!(
            code = "phoenix::file::too_large",
            help = format!(
                "Phoenix reads files of at most {} MiB from here; is this the right file?",
                limit >> 20
            ),
            "{} is larger than {} MiB",
            path.display(),
            limit >> 20
        ));
    }
    String::from_utf8(bytes).map(Some).map_err(|error| {
        miette::miette!(
            code = "phoenix::file::not_utf8",
            help = "save the file as UTF-8",
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            error.utf8_error().valid_up_to()
        )
    })
}

/// Checks that `dir` is a directory: "does not exist" and "is not a directory" are told apart.
pub(crate) fn ensure_directory(dir: &Path, what: &str) -> miette::Result<()> {
    match fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(metadata) => Err(miette::miette!(
            code = "phoenix::config::not_a_directory",
            help = "pass --config DIR or set PHOENIX_CONFIG_DIR",
            "{what} {} is not a directory (it is {})",
            dir.display(),
            describe(&metadata.file_type())
        )),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(miette::miette!(
            code = "phoenix::config::no_directory",
            help = "pass --config DIR or set PHOENIX_CONFIG_DIR",
            "{what} {} does not exist",
            dir.display()
        )),
        Err(error) => Err(error)
            .into_diagnostic()
            .wrap_err_with(|| format!("failed to read {what} {}", dir.display())),
    }
}

/// Writes `contents` to `path` atomically and privately: a new file (mode 0600) beside it, then a rename.
/// Refuses when `path` is a symbolic link; the rename replaces a link planted meanwhile rather than follow it.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> miette::Result<()> {
    refuse_link(path)?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| miette::miette!("{} names no file", path.display()))?;
    let temporary = directory.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| -> io::Result<()> {
        // `create_new` is O_EXCL: it never opens an existing file or follows a link. A leftover of a
        // crashed run with this process id is removed (which does not follow a link either) and made again.
        let mut file = match new_private_file(&temporary) {
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&temporary)?;
                new_private_file(&temporary)?
            }
            other => other?,
        };
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to write {}", path.display()))
}

/// Phoenix's directory for state: `$XDG_STATE_HOME/phoenix`, else `~/.local/state/phoenix`, created private
/// (0700) when missing and made private when it is not.
pub(crate) fn state_dir() -> miette::Result<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    // The XDG base directory specification says a relative XDG_STATE_HOME is invalid and to be ignored.
    let base = match absolute("XDG_STATE_HOME") {
        Some(base) => base,
        None => absolute("HOME")
            .map(|home| home.join(".local/state"))
            .ok_or_else(|| {
                miette::miette!(
                    code = "phoenix::state::no_directory",
                    help = "set XDG_STATE_HOME or HOME to an absolute path",
                    "cannot find a directory for Phoenix's state"
                )
            })?,
    };
    let dir = base.join("phoenix");
    private_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` (and missing parents) with mode 0700, and takes group and other access away from it when
/// it exists with them.
pub(crate) fn private_dir(dir: &Path) -> miette::Result<()> {
    let made = (|| -> io::Result<()> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let metadata = fs::metadata(dir)?;
        if metadata.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    })();
    made.into_diagnostic()
        .wrap_err_with(|| format!("failed to create the private directory {}", dir.display()))
}

fn new_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// The metadata of what `path` names (of the link itself under [`Links::Refuse`]); `None` when nothing is
/// there. Refuses anything but a regular file before opening it, so that opening cannot block on a FIFO.
fn examine(path: &Path, links: Links) -> miette::Result<Option<fs::Metadata>> {
    let unreadable = |error: io::Error| {
        Err(error)
            .into_diagnostic()
            .wrap_err_with(|| format!("failed to read {}", path.display()))
    };
    let metadata = match links {
        Links::Follow => fs::metadata(path),
        Links::Refuse => fs::symlink_metadata(path),
    };
    match metadata {
        Ok(metadata) if metadata.file_type().is_symlink() => Err(link_refused(path)),
        Ok(metadata) => {
            ensure_regular(path, &metadata)?;
            Ok(Some(metadata))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => match fs::symlink_metadata(path) {
            Ok(link) if link.file_type().is_symlink() => {
                let target = fs::read_link(path)
                    .map_or_else(|_| "?".to_owned(), |target| target.display().to_string());
                Err(miette::miette!(
                    code = "phoenix::file::dangling_link",
                    help = "point the link at an existing file, or remove it",
                    "{} is a symbolic link to {target}, which does not exist",
                    path.display()
                ))
            }
            _ => Ok(None),
        },
        Err(error) => unreadable(error),
    }
}

fn ensure_regular(path: &Path, metadata: &fs::Metadata) -> miette::Result<()> {
    if metadata.is_file() {
        return Ok(());
    }
    Err(miette::miette!(
        code = "phoenix::file::not_regular",
        help = "Phoenix reads only regular files (or symbolic links to them)",
        "{} is not a regular file (it is {})",
        path.display(),
        describe(&metadata.file_type())
    ))
}

fn refuse_link(path: &Path) -> miette::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => Err(link_refused(path)),
        _ => Ok(()),
    }
}

fn link_refused(path: &Path) -> miette::Report {
    miette::miette!(
        code = "phoenix::file::symlink",
        help = "Phoenix keeps its state in files of its own; remove the link, or name the file itself",
        "{} is a symbolic link; refusing to use it",
        path.display()
    )
}

fn changed_while_reading(path: &Path) -> miette::Report {
    miette::miette!(
        code = "phoenix::file::changed",
        "{} changed while it was being opened; refusing to read it",
        path.display()
    )
}

/// What kind of thing a file type is, for messages.
fn describe(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_file() {
        "a regular file"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::{CONFIG_LIMIT, Links, read_text, write_private};

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("phoenix-files-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn message(report: miette::Report) -> String {
        format!("{report}")
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = scratch("fifo");
        let fifo = dir.join("phoenix_lxc_configs.json");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        let error = message(read_text(&fifo, CONFIG_LIMIT, Links::Follow).expect_err("refused"));
        assert!(error.contains("is not a regular file (it is a FIFO)"), "{error}");
        assert!(error.contains(&fifo.display().to_string()), "{error}");
    }

    #[test]
    fn a_link_to_dev_zero_is_refused_and_a_link_to_a_file_is_read() {
        let dir = scratch("zero");
        let zero = dir.join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let error = message(read_text(&zero, CONFIG_LIMIT, Links::Follow).expect_err("refused"));
        assert!(error.contains("(it is a character device)"), "{error}");
        std::fs::write(dir.join("real.json"), "{}").expect("writes");
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(dir.join("real.json"), &link).expect("symlink");
        assert_eq!(
            read_text(&link, CONFIG_LIMIT, Links::Follow).expect("read"),
            Some("{}".to_owned())
        );
        let refused = message(read_text(&link, CONFIG_LIMIT, Links::Refuse).expect_err("refused"));
        assert!(refused.contains("is a symbolic link"), "{refused}");
    }

    #[test]
    fn size_is_capped_while_reading_and_missing_is_none_but_dangling_is_an_error() {
        let dir = scratch("size");
        let big = dir.join("big.json");
        // A sparse file: large to the reader, cheap on disk.
        let file = std::fs::File::create(&big).expect("creates");
        file.set_len(2 << 20).expect("grows");
        let error = message(read_text(&big, 1 << 20, Links::Follow).expect_err("too large"));
        assert!(error.contains("big.json is larger than 1 MiB"), "{error}");
        assert!(read_text(&big, 2 << 20, Links::Follow).expect("fits").is_some());
        assert_eq!(
            read_text(&dir.join("absent"), CONFIG_LIMIT, Links::Follow).expect("ok"),
            None
        );
        let dangling = dir.join("dangling.json");
        std::os::unix::fs::symlink(dir.join("absent"), &dangling).expect("symlink");
        let error = message(read_text(&dangling, CONFIG_LIMIT, Links::Follow).expect_err("dangling"));
        assert!(error.contains("which does not exist"), "{error}");
    }

    #[test]
    fn text_that_is_not_utf8_is_an_error_naming_the_path() {
        let dir = scratch("utf8");
        let path = dir.join("latin1.json");
        std::fs::write(&path, b"{\"a\": \"\xe9\"}").expect("writes");
        let error = message(read_text(&path, CONFIG_LIMIT, Links::Follow).expect_err("not UTF-8"));
        assert!(
            error.contains("is not UTF-8 text (invalid byte at offset 7)"),
            "{error}"
        );
    }

    #[test]
    fn private_writes_are_0600_atomic_and_never_through_a_link() {
        let dir = scratch("write");
        let path = dir.join("state.json");
        write_private(&path, b"one").expect("writes");
        write_private(&path, b"two").expect("rewrites");
        assert_eq!(std::fs::read_to_string(&path).expect("reads"), "two");
        let mode = std::fs::metadata(&path).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir).expect("lists").collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep").expect("writes");
        let planted = dir.join("planted.json");
        std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
        let error = message(write_private(&planted, b"evil").expect_err("refused"));
        assert!(error.contains("is a symbolic link"), "{error}");
        assert_eq!(std::fs::read_to_string(&victim).expect("reads"), "keep");
    }
}
