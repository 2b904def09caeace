//! The Portainer client against the fake Portainer, every request checked by Prism against Portainer's
//! OpenAPI description.

use std::time::Duration;

use phoenix_portainer::{Pair, Portainer, PortainerAuth, PortainerSettings};
use phoenix_pve::{SecretString, TlsTrust};
use phoenix_testing::portainer::FakePortainer;

const PASSWORD: &str = "a-long-enough-password";

fn settings(fake: &FakePortainer, auth: PortainerAuth) -> PortainerSettings {
    PortainerSettings {
        url: fake.url().to_owned(),
        auth,
        admin: Some(("admin".to_owned(), SecretString::new(PASSWORD))),
        tls: TlsTrust::WebPki,
        request_timeout: Duration::from_secs(30),
    }
}

fn admin() -> PortainerAuth {
    PortainerAuth::Admin {
        user: "admin".to_owned(),
        password: SecretString::new(PASSWORD),
    }
}

async fn logins(fake: &FakePortainer) -> usize {
    fake.writes()
        .await
        .iter()
        .filter(|write| *write == "POST /api/auth")
        .count()
}

#[tokio::test]
async fn a_new_portainer_gets_its_administrator_environments_and_stacks() {
    let Some(fake) = FakePortainer::start(&[], 3600).await else {
        return;
    };
    let portainer = Portainer::new(&settings(&fake, admin())).expect("a client");

    assert!(!portainer.version().await.expect("answers").is_empty());
    assert!(!portainer.admin_exists().await.expect("answers"));
    portainer.init_admin().await.expect("creates the administrator");
    assert!(portainer.admin_exists().await.expect("answers"));

    assert_eq!(portainer.endpoints().await.expect("lists"), []);
    let agent = portainer
        .create_endpoint("drphoenix", Some("tcp://10.0.0.102:9001"))
        .await
        .expect("creates the agent's environment");
    assert_eq!(
        (agent.name.as_str(), agent.kind, agent.url.as_str()),
        ("drphoenix", 2, "tcp://10.0.0.102:9001")
    );
    let again = portainer
        .create_endpoint("drphoenix", Some("tcp://10.0.0.102:9001"))
        .await;
    assert!(again.expect_err("names are unique").is_status(409));
    portainer
        .update_endpoint_url(agent.id, "tcp://10.0.0.103:9001")
        .await
        .expect("updates");
    assert_eq!(
        portainer.endpoints().await.expect("lists")[0].url,
        "tcp://10.0.0.103:9001"
    );

    let env = [Pair {
        name: "API_PORT".to_owned(),
        value: "8000".to_owned(),
    }];
    let compose = "services:\n  app:\n    image: app:1\n";
    let stack = portainer
        .create_stack(agent.id, "app", compose, &env)
        .await
        .expect("deploys");
    assert_eq!(portainer.stack_file(stack.id).await.expect("reads"), compose);
    let listed = portainer.stacks().await.expect("lists");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].endpoint_id, listed[0].env.clone()),
        (agent.id, env.to_vec())
    );
    portainer
        .update_stack(stack.id, agent.id, "services:\n  app:\n    image: app:2\n", &[])
        .await
        .expect("redeploys");
    assert!(
        portainer
            .stack_file(stack.id)
            .await
            .expect("reads")
            .contains("app:2")
    );
    portainer.delete_stack(stack.id, agent.id).await.expect("removes");
    assert_eq!(portainer.stacks().await.expect("lists"), []);

    // One login for the whole session.
    assert_eq!(logins(&fake).await, 1);
    fake.assert_requests_valid().await;
}

#[tokio::test]
async fn an_expired_login_is_renewed_once_and_an_api_key_needs_none() {
    let Some(fake) = FakePortainer::start(&["ptr_test_key"], 1).await else {
        return;
    };
    let portainer = Portainer::new(&settings(&fake, admin())).expect("a client");
    portainer.init_admin().await.expect("creates the administrator");
    portainer.endpoints().await.expect("logs in and lists");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    portainer.endpoints().await.expect("logs in again and lists");
    assert_eq!(logins(&fake).await, 2);

    let keyed = Portainer::new(&settings(
        &fake,
        PortainerAuth::ApiKey(SecretString::new("ptr_test_key")),
    ))
    .expect("a client");
    keyed.endpoints().await.expect("lists with the key");
    let wrong = Portainer::new(&settings(
        &fake,
        PortainerAuth::ApiKey(SecretString::new("wrong")),
    ))
    .expect("a client");
    let refused = wrong.endpoints().await.expect_err("a wrong key is refused");
    assert!(
        refused.to_string().contains("refused Phoenix's credentials"),
        "{refused}"
    );
    assert!(
        !refused.to_string().contains("wrong"),
        "the key is not in the message: {refused}"
    );
    assert_eq!(logins(&fake).await, 2);
    fake.assert_requests_valid().await;
}
