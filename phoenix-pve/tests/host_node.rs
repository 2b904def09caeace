//! The SSH host channel against a real Debian node ([`TestNode`]): what Phoenix runs through [`SshHost`]
//! happens inside that node and never on this machine.
//!
//! Needs root, LXC, debootstrap and the OpenSSH client; without them the tests are skipped with a message,
//! except under `CI=true`, where they fail.

use std::time::{Duration, SystemTime};

use phoenix_pve::host::CommandOutput;
use phoenix_testing::{TestNode, node};

const LIMIT: Duration = Duration::from_secs(60);

async fn over_ssh(node: &TestNode, argv: &[&str], stdin: Option<&[u8]>) -> CommandOutput {
    let argv: Vec<String> = argv.iter().map(|arg| (*arg).to_owned()).collect();
    node.channel().run(&argv, stdin, LIMIT).await.expect("ssh runs")
}

fn has_user(passwd: &str, user: &str) -> bool {
    passwd.lines().any(|line| line.split(':').next() == Some(user))
}

#[tokio::test]
async fn the_ssh_channel_changes_the_node_and_never_this_machine() {
    let Some(node) = TestNode::start() else {
        return;
    };
    let user = "alice";
    let here = std::fs::read_to_string("/etc/passwd").expect("reads this machine's /etc/passwd");
    assert!(
        !has_user(&here, user),
        "this machine must not have {user} to begin with"
    );

    let release = over_ssh(&node, &["cat", "/etc/os-release"], None).await;
    assert!(
        release.stdout.contains("VERSION_CODENAME=bookworm"),
        "{release:?}"
    );
    let name = over_ssh(&node, &["hostname"], None).await;
    assert_eq!(name.stdout.trim(), node.name());

    let added = over_ssh(&node, &["useradd", "--create-home", user], None).await;
    assert!(added.success(), "{added:?}");
    let inside = node.exec(&["cat", "/etc/passwd"]);
    assert!(inside.success(), "{inside:?}");
    assert!(has_user(&inside.stdout, user), "{}", inside.stdout);
    let home = node.exec(&["test", "-d", "/home/alice"]);
    assert!(home.success(), "useradd made the home inside: {home:?}");
    let here = std::fs::read_to_string("/etc/passwd").expect("reads this machine's /etc/passwd");
    assert!(!has_user(&here, user), "useradd over ssh reached this machine");

    let sudoers = over_ssh(&node, &["visudo", "-c"], None).await;
    assert!(sudoers.success(), "{sudoers:?}");
    assert!(sudoers.stdout.contains("/etc/sudoers: parsed OK"), "{sudoers:?}");
}

#[tokio::test]
async fn files_written_through_stdin_arrive_byte_for_byte() {
    let Some(node) = TestNode::start() else {
        return;
    };
    let path = "/etc/phoenix test/it's here.conf";
    let content = "first line\n$(id) `x` 'quoted' \"double\" ; & | *\n\tlast, no newline";
    let made = over_ssh(&node, &["mkdir", "-p", "/etc/phoenix test"], None).await;
    assert!(made.success(), "{made:?}");
    let written = over_ssh(&node, &["tee", path], Some(content.as_bytes())).await;
    assert!(written.success(), "{written:?}");
    assert_eq!(written.stdout, content, "tee echoes what it wrote");
    let read = over_ssh(&node, &["cat", path], None).await;
    assert_eq!(read.stdout, content);
    assert_eq!(node.exec(&["cat", path]).stdout, content);
    assert!(
        !std::path::Path::new(path).exists(),
        "the file is inside the node only"
    );
    let failed = over_ssh(&node, &["cat", "/nonexistent"], None).await;
    assert_eq!(
        failed.status,
        Some(1),
        "a failing command reports its status: {failed:?}"
    );
}

#[tokio::test]
async fn a_second_node_reuses_the_cached_root_filesystem_and_is_separate() {
    let Some(first) = TestNode::start() else {
        return;
    };
    let stamp = node::stamp();
    let built = modified(&stamp);
    let Some(second) = TestNode::start() else {
        return;
    };
    assert!(!second.built_cache(), "the second node built the cache again");
    assert_eq!(modified(&stamp), built, "the cache's stamp was rewritten");
    assert_ne!(first.name(), second.name());
    assert_ne!(first.port(), second.port());

    let added = over_ssh(&first, &["useradd", "bob"], None).await;
    assert!(added.success(), "{added:?}");
    assert!(has_user(&first.exec(&["cat", "/etc/passwd"]).stdout, "bob"));
    assert!(
        !has_user(&second.exec(&["cat", "/etc/passwd"]).stdout, "bob"),
        "a node's changes stay in its own layer"
    );
    let cached = std::fs::read_to_string(node::rootfs().join("etc/passwd")).expect("reads");
    assert!(!has_user(&cached, "bob"), "nor reach the cached root filesystem");

    let (name, port) = (first.name().to_owned(), first.port());
    drop(first);
    assert!(
        !node::cache_dir().join("nodes").join(&name).exists(),
        "a dropped node is destroyed"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "its sshd is gone"
    );
}

fn modified(path: &std::path::Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}
