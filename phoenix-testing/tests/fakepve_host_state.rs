//! The host state the harness adds on top of fakepve (`fakepve/host_state.py`): what is written reads back
//! as Proxmox returns it, what fakepve's schema rejects is still rejected, and a second identical write is
//! accepted, so a host manager's second run can prove it writes nothing.

use std::sync::Arc;

use phoenix_pve::{Auth, Client, Form, Method, PveError, SecretString, TaskOutcome, TlsTrust};
use phoenix_testing::FakePve;
use serde_json::{Value, json};

/// The HTTP status of an API error, and its per-field errors.
fn refused(result: Result<Value, PveError>) -> (u16, Value) {
    match result {
        Err(PveError::Api {
            status,
            errors,
            message,
            reason,
            ..
        }) => {
            let fields = serde_json::to_value(&errors).expect("JSON");
            let text = message.unwrap_or(reason);
            (status, if errors.is_empty() { json!(text) } else { fields })
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Writes the same PUT twice: a second identical write is accepted, as in Proxmox.
async fn put_twice(client: &Client, path: &str, form: &Form) {
    for _ in 0..2 {
        let _: Value = client.put(path, form).await.expect("writes");
    }
}

async fn fake() -> Option<(FakePve, Arc<Client>)> {
    let fake = FakePve::start().await?;
    let client = Arc::new(Client::connect(fake.token_settings()).await.expect("connects"));
    Some((fake, client))
}

#[tokio::test]
async fn dns_reads_back_what_was_put() {
    let Some((_fake, client)) = fake().await else {
        return;
    };
    let dns = Form::new()
        .text("search", "lab.example")
        .text("dns1", "10.0.0.53")
        .text("dns2", "10.0.0.54");
    put_twice(&client, "/nodes/pve1/dns", &dns).await;
    let read: Value = client.get("/nodes/pve1/dns", &[]).await.expect("reads");
    assert_eq!(
        read,
        json!({"search": "lab.example", "dns1": "10.0.0.53", "dns2": "10.0.0.54"})
    );

    let bad = Form::new().text("search", "lab.example").text("dns1", "notanip");
    let (status, errors) = refused(client.put("/nodes/pve1/dns", &bad).await);
    assert_eq!(status, 400);
    assert!(
        errors["dns1"]
            .as_str()
            .is_some_and(|text| text.contains("IP address")),
        "{errors}"
    );

    // A PUT is the whole resolv.conf: servers it does not name are gone.
    let only_search = Form::new().text("search", "lab.example");
    let _: Value = client.put("/nodes/pve1/dns", &only_search).await.expect("writes");
    let read: Value = client.get("/nodes/pve1/dns", &[]).await.expect("reads");
    assert_eq!(read, json!({"search": "lab.example"}));
}

#[tokio::test]
async fn time_zone_reads_back_and_an_unknown_zone_is_refused() {
    let Some((_fake, client)) = fake().await else {
        return;
    };
    let berlin = Form::new().text("timezone", "Europe/Berlin");
    put_twice(&client, "/nodes/pve1/time", &berlin).await;
    let read: Value = client.get("/nodes/pve1/time", &[]).await.expect("reads");
    assert_eq!(read["timezone"], "Europe/Berlin");
    let offset = read["localtime"].as_i64().expect("localtime") - read["time"].as_i64().expect("time");
    assert!(offset == 3600 || offset == 7200, "{read}");

    let nowhere = Form::new().text("timezone", "Not/AZone");
    let (status, errors) = refused(client.put("/nodes/pve1/time", &nowhere).await);
    assert_eq!((status, errors), (400, json!({"timezone": "No such timezone"})));
}

/// The raw answer of a GET, `data` and what travels beside it (the network listing's `changes`).
async fn raw_get(fake: &FakePve, path: &str) -> Value {
    let pem = std::fs::read(&fake.info.cafile).expect("the CA file");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .build()
        .expect("a client");
    let token = format!("PVEAPIToken={}={}", fake.info.token_id, fake.info.token_secret);
    http.get(format!("{}/api2/json{path}", fake.info.url))
        .header("Authorization", token)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON")
}

fn bridge(iface: &str, cidr: &str) -> Form {
    Form::new()
        .text("iface", iface)
        .text("type", "bridge")
        .text("cidr", cidr)
        .flag("autostart", true)
}

#[tokio::test]
async fn network_changes_wait_for_the_reload() {
    let Some((fake, client)) = fake().await else {
        return;
    };
    let _: Value = client
        .post("/nodes/pve1/network", &bridge("vmbr1", "10.1.0.1/24"))
        .await
        .expect("creates");
    let (status, errors) = refused(
        client
            .post("/nodes/pve1/network", &bridge("vmbr1", "10.1.0.1/24"))
            .await,
    );
    assert_eq!(
        (status, errors),
        (400, json!({"iface": "interface already exists"}))
    );
    let bad = bridge("vmbr2", "notacidr");
    let (status, errors) = refused(client.post("/nodes/pve1/network", &bad).await);
    assert_eq!(status, 400);
    assert!(errors.get("cidr").is_some(), "{errors}");

    let pending: Value = client.get("/nodes/pve1/network/vmbr1", &[]).await.expect("reads");
    assert_eq!(pending["type"], "bridge");
    assert_eq!(pending["cidr"], "10.1.0.1/24");
    assert_eq!(pending["address"], "10.1.0.1");
    assert!(
        pending.get("bridge_ports").is_none(),
        "no port: the node's one NIC, eno1, is vmbr0's"
    );
    assert_eq!(pending["method"], "static");
    assert!(
        pending.get("active").is_none(),
        "not up before the reload: {pending}"
    );
    let listing = raw_get(&fake, "/nodes/pve1/network").await;
    let changes = listing["changes"].as_str().expect("a changes diff");
    assert!(changes.contains("+iface vmbr1 inet static"), "{changes}");

    let comment = Form::new().text("type", "bridge").text("comments", "lab");
    put_twice(&client, "/nodes/pve1/network/vmbr1", &comment).await;
    let outcome = client
        .run_task(Method::PUT, "/nodes/pve1/network", &Form::new())
        .await
        .expect("reloads");
    assert!(matches!(outcome, TaskOutcome::Finished { .. }), "{outcome:?}");
    let applied: Value = client.get("/nodes/pve1/network/vmbr1", &[]).await.expect("reads");
    assert_eq!(applied["active"], 1);
    assert_eq!(applied["comments"], "lab");
    assert!(
        raw_get(&fake, "/nodes/pve1/network")
            .await
            .get("changes")
            .is_none()
    );

    // A pending delete is reverted by DELETE /nodes/{node}/network.
    let _: Value = client
        .delete("/nodes/pve1/network/vmbr1", &[])
        .await
        .expect("deletes");
    let (status, _) = refused(client.get("/nodes/pve1/network/vmbr1", &[]).await);
    assert_eq!(status, 400);
    let _: Value = client.delete("/nodes/pve1/network", &[]).await.expect("reverts");
    let back: Value = client.get("/nodes/pve1/network/vmbr1", &[]).await.expect("reads");
    assert_eq!(back["cidr"], "10.1.0.1/24");
}

#[tokio::test]
async fn users_and_groups_read_back_in_proxmox_shapes() {
    let Some((_fake, client)) = fake().await else {
        return;
    };
    let group = Form::new().text("groupid", "ops").text("comment", "operators");
    let _: Value = client
        .post("/access/groups", &group)
        .await
        .expect("creates the group");
    let user = Form::new()
        .text("userid", "deploy@pve")
        .text("groups", "ops")
        .text("comment", "Phoenix");
    let _: Value = client
        .post("/access/users", &user)
        .await
        .expect("creates the user");
    let (status, message) = refused(client.post("/access/users", &user).await);
    assert_eq!(status, 500);
    assert!(
        message
            .as_str()
            .is_some_and(|text| text.contains("already exists")),
        "{message}"
    );
    let bad = Form::new().text("userid", "notvalid");
    let (status, errors) = refused(client.post("/access/users", &bad).await);
    assert_eq!(status, 400);
    assert!(errors.get("userid").is_some(), "{errors}");

    let update = Form::new().text("comment", "Phoenix").text("groups", "ops");
    put_twice(&client, "/access/users/deploy@pve", &update).await;
    let read: Value = client.get("/access/users/deploy@pve", &[]).await.expect("reads");
    assert_eq!(
        read,
        json!({"enable": 1, "expire": 0, "comment": "Phoenix", "groups": ["ops"], "tokens": {}})
    );
    let groups: Value = client.get("/access/groups", &[]).await.expect("lists");
    assert_eq!(
        groups,
        json!([{"groupid": "ops", "comment": "operators", "users": "deploy@pve"}])
    );
    let members: Value = client.get("/access/groups/ops", &[]).await.expect("reads");
    assert_eq!(
        members,
        json!({"comment": "operators", "members": ["deploy@pve"]})
    );
}

#[tokio::test]
async fn roles_and_acl_entries_are_kept() {
    let Some((_fake, client)) = fake().await else {
        return;
    };
    let role = Form::new()
        .text("roleid", "PhoenixOperator")
        .text("privs", "VM.Audit,Sys.Audit");
    let _: Value = client
        .post("/access/roles", &role)
        .await
        .expect("creates the role");
    let read: Value = client
        .get("/access/roles/PhoenixOperator", &[])
        .await
        .expect("reads");
    assert_eq!(read, json!({"Sys.Audit": 1, "VM.Audit": 1}));
    let bogus = Form::new().text("roleid", "Bogus").text("privs", "Not.APriv");
    let (status, message) = refused(client.post("/access/roles", &bogus).await);
    assert_eq!(status, 500);
    assert!(
        message
            .as_str()
            .is_some_and(|text| text.contains("invalid privilege")),
        "{message}"
    );

    let _: Value = client
        .post("/access/users", &Form::new().text("userid", "deploy@pve"))
        .await
        .expect("creates the user");
    let acl = Form::new()
        .text("path", "/vms")
        .text("roles", "PhoenixOperator")
        .text("users", "deploy@pve");
    put_twice(&client, "/access/acl", &acl).await;
    let entries: Value = client.get("/access/acl", &[]).await.expect("reads");
    assert_eq!(
        entries,
        json!([{"path": "/vms", "type": "user", "ugid": "deploy@pve", "roleid": "PhoenixOperator", "propagate": 1}])
    );
    let nowhere = Form::new()
        .text("path", "/nowhere")
        .text("roles", "PhoenixOperator")
        .text("users", "deploy@pve");
    let (status, errors) = refused(client.put("/access/acl", &nowhere).await);
    assert_eq!(
        (status, errors),
        (400, json!({"path": "invalid ACL path '/nowhere'"}))
    );
    let _: Value = client
        .put("/access/acl", &acl.flag("delete", true))
        .await
        .expect("revokes");
    let entries: Value = client.get("/access/acl", &[]).await.expect("reads");
    assert_eq!(entries, json!([]));
}

#[tokio::test]
async fn a_token_shows_its_secret_once_and_logs_in() {
    let Some((fake, client)) = fake().await else {
        return;
    };
    let _: Value = client
        .post("/access/users", &Form::new().text("userid", "deploy@pve"))
        .await
        .expect("creates the user");
    let options = Form::new().flag("privsep", false).text("comment", "ci");
    let created: Value = client
        .post("/access/users/deploy@pve/token/ci", &options)
        .await
        .expect("creates the token");
    assert_eq!(created["full-tokenid"], "deploy@pve!ci");
    assert_eq!(created["info"], json!({"privsep": 0, "comment": "ci"}));
    let secret = created["value"].as_str().expect("the secret").to_owned();
    let read: Value = client
        .get("/access/users/deploy@pve/token/ci", &[])
        .await
        .expect("reads");
    assert_eq!(
        read,
        json!({"privsep": 0, "comment": "ci"}),
        "no secret after creation"
    );
    let (status, message) = refused(client.post("/access/users/deploy@pve/token/ci", &options).await);
    assert_eq!((status, message), (500, json!("Token already exists.")));
    let (status, errors) = refused(
        client
            .post("/access/users/deploy@pve/token/bad!id", &options)
            .await,
    );
    assert_eq!(status, 400);
    assert!(errors.get("tokenid").is_some(), "{errors}");

    let auth = Auth::Token {
        id: "deploy@pve!ci".to_owned(),
        secret: SecretString::new(secret),
    };
    let settings = fake.settings(auth, TlsTrust::CaFile(fake.info.cafile.clone().into()));
    let as_token = Client::connect(settings).await.expect("the new token connects");
    let _: Value = as_token.get("/version", &[]).await.expect("reads with it");
}
