//! Snapshot tests of diagnostics as operators see them (miette's graphical handler, no colour, 80 columns)
//! and as machines read them (`--output json` records).

use expect_test::{Expect, expect};
use miette::{GraphicalReportHandler, GraphicalTheme};
use phoenix_core::{CheckOptions, FileKind, SourceFile, validate};

#[track_caller]
fn check(kind: FileKind, text: &str, expect: Expect) {
    let mut sources = vec![SourceFile::new(kind, format!("etc/{}", kind.file_name()), text)];
    for other in FileKind::ALL
        .into_iter()
        .filter(|&other| other != kind && other.is_required())
    {
        let empty = match other {
            FileKind::Lxc => r#"{"lxc_configs": {}}"#,
            FileKind::Hypervisor => r#"{"proxmox_storages": [{"id": "local", "content": ["vztmpl"]}]}"#,
            _ => "{}",
        };
        sources.push(SourceFile::new(other, other.file_name(), empty));
    }
    let validation = validate(sources, &CheckOptions::default());
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(80);
    let mut rendered = String::new();
    for problem in validation.problems() {
        handler.render_report(&mut rendered, problem).expect("renders");
        let record = serde_json::to_string(&problem.to_record()).expect("serialises");
        rendered.push_str(&record);
        rendered.push_str("\n\n");
    }
    expect.assert_eq(&rendered);
}

#[test]
fn unknown_key() {
    check(
        FileKind::Lxc,
        r#"{
  "lxc_configs": {
    "100": {
      "name": "web",
      "template": "local:vztmpl/debian.tar.zst",
      "memroy_mb": 512
    }
  }
}
"#,
        expect![[r#"
            phoenix::schema::unknown_key

              × unknown key `memroy_mb`
               ╭─[etc/phoenix_lxc_configs.json:6:7]
             5 │       "template": "local:vztmpl/debian.tar.zst",
             6 │       "memroy_mb": 512
               ·       ─────┬─────
               ·            ╰── not a known key here
             7 │     }
               ╰────
              help: did you mean `memory_mb`?
                    at /lxc_configs/100/memroy_mb
            {"file":"etc/phoenix_lxc_configs.json","pointer":"/lxc_configs/100/memroy_mb","line":6,"column":7,"severity":"error","code":"phoenix::schema::unknown_key","message":"unknown key `memroy_mb`","help":"did you mean `memory_mb`?"}

        "#]],
    );
}

#[test]
fn trailing_comma() {
    check(
        FileKind::Vm,
        r#"{
  "vms": [
    { "vmid": 9000, "name": "tpl", "template_image": "noble.img" },
  ]
}
"#,
        expect![[r#"
            phoenix::json::syntax

              × phoenix_vm_configs.json is not valid JSON: trailing comma
               ╭─[etc/phoenix_vm_configs.json:3:67]
             2 │   "vms": [
             3 │     { "vmid": 9000, "name": "tpl", "template_image": "noble.img" },
               ·                                                                   ┬
               ·                                                                   ╰── trailing comma
             4 │   ]
               ╰────
              help: JSON allows no comma after the last item: remove it
            {"file":"etc/phoenix_vm_configs.json","pointer":"","line":3,"column":67,"severity":"error","code":"phoenix::json::syntax","message":"phoenix_vm_configs.json is not valid JSON: trailing comma","help":"JSON allows no comma after the last item: remove it"}

        "#]],
    );
}

#[test]
fn cycle() {
    check(
        FileKind::Lxc,
        r#"{
  "lxc_configs": {
    "102": { "name": "a", "template": "local:vztmpl/t.tar.zst", "dependencies": ["103"] },
    "103": { "name": "b", "template": "local:vztmpl/t.tar.zst", "dependencies": ["102"] }
  }
}
"#,
        expect![[r#"
            phoenix::graph::cycle

              × dependency cycle: 102 -> 103 -> 102
               ╭─[etc/phoenix_lxc_configs.json:3:82]
             2 │   "lxc_configs": {
             3 │     "102": { "name": "a", "template": "local:vztmpl/t.tar.zst", "dependencies": ["103"] },
               ·                                                                                  ──┬──
               ·                                                                                    ╰── this edge closes the cycle
             4 │     "103": { "name": "b", "template": "local:vztmpl/t.tar.zst", "dependencies": ["102"] }
               ╰────
              help: remove one of these dependencies: a guest cannot wait for itself
                    at /lxc_configs/102/dependencies/0
            {"file":"etc/phoenix_lxc_configs.json","pointer":"/lxc_configs/102/dependencies/0","line":3,"column":82,"severity":"error","code":"phoenix::graph::cycle","message":"dependency cycle: 102 -> 103 -> 102","help":"remove one of these dependencies: a guest cannot wait for itself"}

        "#]],
    );
}

#[test]
fn gateway_outside_subnet_and_plaintext_secret() {
    check(
        FileKind::Hypervisor,
        r#"{
  "network": {
    "interfaces": { "name": "vmbr0", "address": "10.0.0.2/24", "gateway": "10.0.1.1" }
  },
  "portainer_api": { "admin_user": "admin", "admin_password": "hunter2" }
}
"#,
        expect![[r#"
            phoenix::network::gateway_outside_subnet

              × gateway 10.0.1.1 is outside the subnet 10.0.0.0/24
               ╭─[etc/phoenix_hypervisor_config.json:3:75]
             2 │   "network": {
             3 │     "interfaces": { "name": "vmbr0", "address": "10.0.0.2/24", "gateway": "10.0.1.1" }
               ·                                                                           ─────┬────
               ·                                                                                ╰── not reachable without a router
             4 │   },
               ╰────
              help: use a gateway inside 10.0.0.0/24 or fix the prefix length
                    at /network/interfaces/gateway
            {"file":"etc/phoenix_hypervisor_config.json","pointer":"/network/interfaces/gateway","line":3,"column":75,"severity":"error","code":"phoenix::network::gateway_outside_subnet","message":"gateway 10.0.1.1 is outside the subnet 10.0.0.0/24","help":"use a gateway inside 10.0.0.0/24 or fix the prefix length"}

            phoenix::config::plaintext_secret

              ⚠ `portainer_api.admin_password` holds a secret in plain text
               ╭─[etc/phoenix_hypervisor_config.json:5:63]
             4 │   },
             5 │   "portainer_api": { "admin_user": "admin", "admin_password": "hunter2" }
               ·                                                               ────┬────
               ·                                                                   ╰── secret written inline
             6 │ }
               ╰────
              help: write {"env": "VARIABLE"} or {"file": "path/to/secret"} and keep the
                    secret out of the file
                    at /portainer_api/admin_password
            {"file":"etc/phoenix_hypervisor_config.json","pointer":"/portainer_api/admin_password","line":5,"column":63,"severity":"warning","code":"phoenix::config::plaintext_secret","message":"`portainer_api.admin_password` holds a secret in plain text","help":"write {\"env\": \"VARIABLE\"} or {\"file\": \"path/to/secret\"} and keep the secret out of the file"}

        "#]],
    );
}
