//! What a stack needs on its VM besides its compose file: the images its services build from Dockerfiles
//! in the configuration directory, and the files its environment declares (`files`: a source, and where
//! its containers see it).
//!
//! Both are content-addressed, so the compose text Phoenix deploys changes exactly when they do. A service
//! with `build:` is deployed with `image: <name>:<digest>` instead, the digest of its build context (a tar
//! archive written the same way every time) and build options; the image is built on the VM with
//! `docker build` fed that archive on standard input, only when the VM has no image of that tag. A file is
//! written on the VM under `<root>/<stack>/<digest>/` (directories `0700`, the file `0644`, so that only
//! root on the VM and the stack's containers read it) and bind-mounted read-only into every service of the
//! stack. A stack with neither is deployed with its compose file exactly as written.
//!
//! After a deploy, the files and built images of earlier versions of the stack are removed ([`prune`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use phoenix_core::ManagerError;
use phoenix_core::config::stacks::StackFile;
use phoenix_pve::guest::{self, GuestExec};
use phoenix_pve::host::sha256_hex;

use crate::docker::{check, image_exists};
use serde_json::{Map, Value};

/// Where stacks' files are kept on a VM unless the manager is told otherwise.
pub const DEFAULT_FILES_ROOT: &str = "/var/lib/phoenix/stacks";
/// The label on every image Phoenix builds: `<stack>/<service>`.
pub const BUILD_LABEL: &str = "phoenix.build";
/// What the `images` and `files` fields show for what the VM does not have.
pub const MISSING: &str = "(missing)";

/// The largest build context sent to a VM (it travels through the guest agent in one message).
const CONTEXT_LIMIT: usize = 64 << 20;
/// How long one build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Hex digits of a digest used in tags and paths.
const SHORT: usize = 16;

/// Writes standard input to `$1` through a temporary file beside it, so a reader never sees half a file.
const WRITE_FILE: &str = "set -e; umask 077; mkdir -p \"$(dirname \"$1\")\"; cat > \"$1.part\"; \
                          chmod 0644 \"$1.part\"; mv -f \"$1.part\" \"$1\"";

/// A stack ready to deploy: the compose text as deployed, and what must be on the VM first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prepared {
    /// The compose text to deploy.
    pub(crate) compose: String,
    pub(crate) builds: Vec<Build>,
    pub(crate) files: Vec<Placed>,
    /// The stack's directory of files on the VM.
    pub(crate) dir: String,
}

/// An image a service builds.
#[derive(Debug, Clone)]
pub(crate) struct Build {
    pub(crate) service: String,
    pub(crate) label: String,
    pub(crate) tag: String,
    /// The build context, as a tar archive.
    context: Vec<u8>,
    /// `docker build` options before the `-` that reads the context.
    options: Vec<String>,
}

/// A file placed on the VM for the stack's containers.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub(crate) destination: String,
    /// Where it is on the VM.
    pub(crate) path: String,
    pub(crate) digest: String,
    content: Vec<u8>,
}

impl Prepared {
    /// Whether the stack needs anything on its VM besides what Portainer or Compose deploys.
    pub(crate) fn has_assets(&self) -> bool {
        !self.builds.is_empty() || !self.files.is_empty()
    }

    /// The fields the assets are compared by: `images` (service to tag) and `files` (destination to
    /// digest), each only when there are some.
    pub(crate) fn fields(&self) -> BTreeMap<String, Value> {
        let mut fields = BTreeMap::new();
        if !self.builds.is_empty() {
            let images = self
                .builds
                .iter()
                .map(|build| (build.service.clone(), Value::String(build.tag.clone())))
                .collect();
            fields.insert("images".to_owned(), Value::Object(images));
        }
        if !self.files.is_empty() {
            let files = self
                .files
                .iter()
                .map(|file| (file.destination.clone(), Value::String(file.digest.clone())))
                .collect();
            fields.insert("files".to_owned(), Value::Object(files));
        }
        fields
    }
}

/// Reads what stack `name` builds and places, from its compose file (`text`, found at `compose_path`) and
/// the `declared` files of the environment it runs with, and rewrites the compose file to deploy
/// accordingly.
pub(crate) fn prepare(
    name: &str,
    declared: &[StackFile],
    compose_path: &Path,
    text: &str,
    config_dir: &Path,
    files_root: &str,
) -> Result<Prepared, String> {
    let dir = format!("{}/{name}", files_root.trim_end_matches('/'));
    let stack_dir = compose_path.parent().unwrap_or(config_dir);
    let mut document: Value = serde_saphyr::from_str(text)
        .map_err(|error| format!("{} is not YAML: {error}", compose_path.display()))?;
    let services = document
        .get_mut("services")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("{} has no `services`", compose_path.display()))?;
    let mut builds = Vec::new();
    for (service, definition) in services.iter_mut() {
        let Some(definition) = definition.as_object_mut() else {
            return Err(format!("service `{service}` of stack {name} is not a mapping"));
        };
        let Some(build) = definition.remove("build") else {
            continue;
        };
        let built = build_of(name, service, &build, definition.get("image"), stack_dir)?;
        definition.insert("image".to_owned(), Value::String(built.tag.clone()));
        builds.push(built);
    }
    let mut files = Vec::new();
    for file in declared {
        let candidates = file.source_candidates(config_dir, Some(stack_dir));
        let (source, content) = candidates
            .iter()
            .find_map(|path| std::fs::read(path).ok().map(|content| (path, content)))
            .ok_or_else(|| {
                let tried: Vec<String> = candidates.iter().map(|path| path.display().to_string()).collect();
                format!(
                    "file `{}` of stack {name} is not there: none of {} exists",
                    file.source,
                    tried.join(", ")
                )
            })?;
        if !file.destination_in_container.starts_with('/') {
            return Err(format!(
                "file `{}` of stack {name}: `destination_in_container` must be an absolute path, not `{}`",
                file.source, file.destination_in_container
            ));
        }
        let digest = sha256_hex(&content);
        let base = source
            .file_name()
            .map(|base| base.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_owned());
        files.push(Placed {
            destination: file.destination_in_container.clone(),
            path: format!("{dir}/{}/{base}", &digest[..SHORT]),
            digest: format!("sha256:{digest}"),
            content,
        });
    }
    if builds.is_empty() && files.is_empty() {
        return Ok(Prepared {
            compose: text.to_owned(),
            dir,
            ..Prepared::default()
        });
    }
    for (service, definition) in services.iter_mut() {
        let definition = definition.as_object_mut().expect("checked above");
        if files.is_empty() {
            break;
        }
        let volumes = definition
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(volumes) = volumes else {
            return Err(format!(
                "the volumes of service `{service}` of stack {name} are not a list"
            ));
        };
        for file in &files {
            volumes.push(Value::String(format!("{}:{}:ro", file.path, file.destination)));
        }
    }
    let compose = serde_saphyr::to_string(&document).map_err(|error| error.to_string())?;
    Ok(Prepared {
        compose,
        builds,
        files,
        dir,
    })
}

/// The image service `service` builds, from its `build` (a context path, or a mapping with `context`,
/// `dockerfile`, `args`, `target`, `network`).
fn build_of(
    stack: &str,
    service: &str,
    build: &Value,
    image: Option<&Value>,
    stack_dir: &Path,
) -> Result<Build, String> {
    let what = format!("the build of service `{service}` of stack {stack}");
    let mut options = Vec::new();
    let context = match build {
        Value::String(context) => context.clone(),
        Value::Object(settings) => {
            if let Some(other) = settings.keys().find(|key| !BUILD_KEYS.contains(&key.as_str())) {
                return Err(format!(
                    "{what}: `{other}` is not something Phoenix builds with (it takes {})",
                    BUILD_KEYS.join(", ")
                ));
            }
            let text = |key: &str| match settings.get(key) {
                None => Ok(None),
                Some(Value::String(value)) => Ok(Some(value.clone())),
                Some(_) => Err(format!("{what}: `{key}` must be a string")),
            };
            for (key, option) in [
                ("dockerfile", "--file"),
                ("target", "--target"),
                ("network", "--network"),
            ] {
                if let Some(value) = text(key)? {
                    options.extend([option.to_owned(), value]);
                }
            }
            if let Some(args) = settings.get("args") {
                let arguments = build_args(args)
                    .ok_or_else(|| format!("{what}: `args` must be a mapping or a list of NAME=value"))?;
                for argument in arguments {
                    options.extend(["--build-arg".to_owned(), argument]);
                }
            }
            text("context")?.unwrap_or_else(|| ".".to_owned())
        }
        _ => return Err(format!("{what} is neither a path nor a mapping")),
    };
    if context.contains("://") || context.starts_with("git@") {
        return Err(format!(
            "{what}: the context `{context}` is remote; Phoenix builds from the configuration directory"
        ));
    }
    let path = stack_dir.join(&context);
    let archive = context_archive(&path).map_err(|error| format!("{what}: {error}"))?;
    let mut material = archive.clone();
    material.extend(options.join("\n").as_bytes());
    let digest = sha256_hex(&material);
    let repository = match image.and_then(Value::as_str) {
        Some(image) => without_tag(image).to_owned(),
        None => format!("phoenix/{}-{}", repository_part(stack), repository_part(service)),
    };
    Ok(Build {
        service: service.to_owned(),
        label: format!("{stack}/{service}"),
        tag: format!("{repository}:{}", &digest[..SHORT]),
        context: archive,
        options,
    })
}

/// The keys of a service's `build` that Phoenix passes on to `docker build`.
const BUILD_KEYS: [&str; 5] = ["context", "dockerfile", "args", "target", "network"];

fn text_of(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// `args` as `NAME=value` arguments, sorted; a name without a value is passed on as it is (Docker takes
/// it from the builder's environment).
fn build_args(value: &Value) -> Option<Vec<String>> {
    let mut arguments: Vec<String> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(name, value)| match value {
                Value::String(value) => Some(format!("{name}={value}")),
                Value::Number(value) => Some(format!("{name}={value}")),
                Value::Bool(value) => Some(format!("{name}={value}")),
                Value::Null => Some(name.clone()),
                _ => None,
            })
            .collect::<Option<_>>()?,
        Value::Array(list) => list.iter().map(text_of).collect::<Option<_>>()?,
        _ => return None,
    };
    arguments.sort();
    Some(arguments)
}

/// An image reference without its tag or digest (`registry:5000/app:1` is `registry:5000/app`).
fn without_tag(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// A name made fit for a repository path component: lower case, with anything else than letters, digits,
/// `.`, `_` and `-` made `-`.
fn repository_part(name: &str) -> String {
    name.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '-',
        })
        .collect()
}

/// The build context at `dir` as a tar archive that depends only on the names, kinds, modes (executable or
/// not) and contents of what is in it: sorted, with no times or owners.
fn context_archive(dir: &Path) -> Result<Vec<u8>, String> {
    if !dir.is_dir() {
        return Err(format!("the context {} is not a directory", dir.display()));
    }
    let mut entries = Vec::new();
    walk(dir, Path::new(""), &mut entries).map_err(|error| format!("reading {}: {error}", dir.display()))?;
    entries.sort();
    let mut builder = tar::Builder::new(Vec::new());
    let mut size = 0usize;
    for relative in entries {
        let path = dir.join(&relative);
        let metadata =
            std::fs::symlink_metadata(&path).map_err(|error| format!("{}: {error}", path.display()))?;
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let failed = |error: std::io::Error| format!("{}: {error}", path.display());
        if metadata.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, &relative, std::io::empty())
                .map_err(failed)?;
        } else if metadata.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(failed)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, &relative, &target)
                .map_err(failed)?;
        } else if metadata.is_file() {
            let content = std::fs::read(&path).map_err(failed)?;
            size += content.len();
            if size > CONTEXT_LIMIT {
                return Err(format!(
                    "the context {} holds more than {} MiB; keep large files out of it",
                    dir.display(),
                    CONTEXT_LIMIT >> 20
                ));
            }
            use std::os::unix::fs::PermissionsExt;
            let executable = metadata.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(content.len() as u64);
            builder
                .append_data(&mut header, &relative, content.as_slice())
                .map_err(failed)?;
        }
    }
    builder.into_inner().map_err(|error| error.to_string())
}

fn walk(root: &Path, relative: &Path, entries: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let kind = entry.file_type()?;
        entries.push(path.clone());
        if kind.is_dir() {
            walk(root, &path, entries)?;
        }
    }
    Ok(())
}

/// The live `images` and `files` fields of a stack's assets on the VM.
pub(crate) async fn observe(
    guest: &dyn GuestExec,
    prepared: &Prepared,
) -> Result<BTreeMap<String, Value>, ManagerError> {
    let mut fields = BTreeMap::new();
    if !prepared.builds.is_empty() {
        let mut images = Map::new();
        for build in &prepared.builds {
            let present = image_exists(guest, &build.tag).await?;
            let shown = if present { build.tag.as_str() } else { MISSING };
            images.insert(build.service.clone(), Value::String(shown.to_owned()));
        }
        fields.insert("images".to_owned(), Value::Object(images));
    }
    if !prepared.files.is_empty() {
        let digests = file_digests(guest, &prepared.files).await?;
        let files = prepared
            .files
            .iter()
            .map(|file| {
                let live = digests
                    .get(&file.path)
                    .map_or(MISSING.to_owned(), |digest| format!("sha256:{digest}"));
                (file.destination.clone(), Value::String(live))
            })
            .collect();
        fields.insert("files".to_owned(), Value::Object(files));
    }
    Ok(fields)
}

/// Puts the stack's files and images on the VM: each file whose content differs is written, each image
/// the VM lacks is built (and checked to be there after).
pub(crate) async fn ensure(guest: &dyn GuestExec, prepared: &Prepared) -> Result<(), ManagerError> {
    if !prepared.files.is_empty() {
        let digests = file_digests(guest, &prepared.files).await?;
        for file in &prepared.files {
            if digests.get(&file.path).map(|digest| format!("sha256:{digest}")) == Some(file.digest.clone()) {
                continue;
            }
            let argv = ["/bin/sh", "-c", WRITE_FILE, "sh", &file.path].map(str::to_owned);
            let output = guest
                .exec(&argv, Some(&file.content), &BTreeMap::new(), COMMAND_TIMEOUT)
                .await?;
            check(guest, &format!("writing {}", file.path), &output)?;
        }
    }
    for build in &prepared.builds {
        if image_exists(guest, &build.tag).await? {
            continue;
        }
        let mut argv: Vec<String> = ["docker", "build", "--tag", &build.tag, "--label"]
            .map(str::to_owned)
            .into();
        argv.push(format!("{BUILD_LABEL}={}", build.label));
        argv.extend(build.options.iter().cloned());
        argv.push("-".to_owned());
        let output = guest
            .exec(&argv, Some(&build.context), &BTreeMap::new(), BUILD_TIMEOUT)
            .await?;
        check(
            guest,
            &format!("building {} for service {}", build.tag, build.service),
            &output,
        )?;
        if !image_exists(guest, &build.tag).await? {
            return Err(ManagerError::failed(format!(
                "{}: {} is not there after docker build",
                guest.describe(),
                build.tag
            )));
        }
    }
    Ok(())
}

/// Removes what earlier versions of the stack left on the VM: other files under its directory, and images
/// built for its services under other tags. Best effort: an image still in use stays.
pub(crate) async fn prune(guest: &dyn GuestExec, name: &str, prepared: &Prepared) {
    let keep: BTreeSet<&str> = prepared
        .files
        .iter()
        .filter_map(|file| file.path.strip_prefix(&format!("{}/", prepared.dir)))
        .filter_map(|rest| rest.split('/').next())
        .collect();
    let mut argv: Vec<String> = ["find", &prepared.dir, "-mindepth", "1", "-maxdepth", "1"]
        .map(str::to_owned)
        .into();
    for digest in keep {
        argv.extend(["!".to_owned(), "-name".to_owned(), digest.to_owned()]);
    }
    argv.extend(["-exec", "rm", "-rf", "--", "{}", "+"].map(str::to_owned));
    let _ = guest.exec(&argv, None, &BTreeMap::new(), COMMAND_TIMEOUT).await;
    let current: BTreeSet<&str> = prepared.builds.iter().map(|build| build.tag.as_str()).collect();
    let filter = format!("label={BUILD_LABEL}");
    let format = format!("{{{{.Repository}}}}:{{{{.Tag}}}} {{{{.Label \"{BUILD_LABEL}\"}}}}");
    let argv = ["docker", "image", "ls", "--filter", &filter, "--format", &format].map(str::to_owned);
    let Ok(listed) = guest.exec(&argv, None, &BTreeMap::new(), COMMAND_TIMEOUT).await else {
        return;
    };
    for line in listed.stdout.lines() {
        let Some((tag, label)) = line.trim().split_once(' ') else {
            continue;
        };
        let ours = label.split_once('/').is_some_and(|(stack, _)| stack == name);
        if ours && !current.contains(tag) {
            let argv = ["docker", "image", "rm", tag].map(str::to_owned);
            let _ = guest.exec(&argv, None, &BTreeMap::new(), COMMAND_TIMEOUT).await;
        }
    }
}

/// The SHA-256 of each of `files` that is on the VM, by path.
async fn file_digests(
    guest: &dyn GuestExec,
    files: &[Placed],
) -> Result<BTreeMap<String, String>, ManagerError> {
    guest::file_digests(
        guest,
        files.iter().map(|file| file.path.as_str()),
        COMMAND_TIMEOUT,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_the_repository_and_registry_of_the_declared_image() {
        assert_eq!(without_tag("app:latest"), "app");
        assert_eq!(
            without_tag("registry.lan:5000/team/app:1.2"),
            "registry.lan:5000/team/app"
        );
        assert_eq!(
            without_tag("registry.lan:5000/team/app"),
            "registry.lan:5000/team/app"
        );
        assert_eq!(without_tag("app@sha256:abc"), "app");
        assert_eq!(repository_part("Thinkheads AI_app"), "thinkheads-ai_app");
    }

    #[test]
    fn the_context_archive_depends_on_content_not_on_times() {
        let dir = std::env::temp_dir().join(format!("phoenix-context-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.join("www/index.html"), "one").unwrap();
        let first = context_archive(&dir).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.join("www/index.html"), "one").unwrap();
        assert_eq!(
            context_archive(&dir).unwrap(),
            first,
            "rewritten with the same content"
        );
        std::fs::write(dir.join("www/index.html"), "two").unwrap();
        assert_ne!(context_archive(&dir).unwrap(), first);
        let mut names: Vec<String> = tar::Archive::new(first.as_slice())
            .entries()
            .unwrap()
            .map(|entry| entry.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["Dockerfile", "www", "www/index.html"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn build_options_are_read_and_unknown_ones_refused() {
        let dir = std::env::temp_dir().join(format!("phoenix-build-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("web")).unwrap();
        std::fs::write(dir.join("web/Dockerfile"), "FROM scratch\n").unwrap();
        let build: Value =
            serde_json::json!({"context": "web", "network": "none", "args": {"B": 2, "A": "x"}});
        let built = build_of("shop", "web", &build, None, &dir).unwrap();
        assert_eq!(
            built.options,
            ["--network", "none", "--build-arg", "A=x", "--build-arg", "B=2"]
        );
        assert!(built.tag.starts_with("phoenix/shop-web:"), "{}", built.tag);
        let other = serde_json::json!({"context": "web", "network": "host"});
        assert_ne!(
            build_of("shop", "web", &other, None, &dir).unwrap().tag,
            built.tag
        );
        let named = build_of(
            "shop",
            "web",
            &Value::String("web".into()),
            Some(&"shop/web:1".into()),
            &dir,
        );
        assert!(named.unwrap().tag.starts_with("shop/web:"));
        let unknown = serde_json::json!({"context": "web", "ssh": ["default"]});
        let error = build_of("shop", "web", &unknown, None, &dir).unwrap_err();
        assert!(
            error.contains("`ssh` is not something Phoenix builds with"),
            "{error}"
        );
        let remote = build_of(
            "shop",
            "web",
            &Value::String("https://x/y.git".into()),
            None,
            &dir,
        );
        assert!(remote.unwrap_err().contains("remote"));
        let missing = build_of("shop", "web", &Value::String("nope".into()), None, &dir);
        assert!(missing.unwrap_err().contains("is not a directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
