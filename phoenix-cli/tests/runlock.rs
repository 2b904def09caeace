//! The cluster-wide run lock (`phoenix_pve::runlock`, a Proxmox pool) against fakepve: taken once, named
//! when held, released only by its holder, taken over when stale or forced, never from a foreign pool.

use std::time::Duration;

use phoenix_pve::Form;
use phoenix_pve::runlock::{Attempt, HeldBy, Holder, LOCK_POOL, PoolLock};
use phoenix_testing::FakePve;

const LEASE: Duration = Duration::from_secs(300);

async fn comment(client: &phoenix_pve::Client) -> Option<String> {
    let pools: Vec<serde_json::Value> = client.get("/pools", &[]).await.expect("lists pools");
    pools
        .iter()
        .find(|pool| pool["poolid"] == LOCK_POOL)
        .map(|pool| pool["comment"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn the_pool_lock_excludes_a_second_run_and_names_its_holder() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = fake.root_client().await;
    let Attempt::Acquired(first) = PoolLock::try_acquire(&client, LEASE, false).await.expect("tries") else {
        panic!("a free lock is taken");
    };
    let written = comment(&client).await.expect("the pool exists");
    assert_eq!(Holder::parse(&written).as_ref(), Some(first.holder()));
    match PoolLock::try_acquire(&client, LEASE, false).await.expect("tries") {
        Attempt::Held(HeldBy::Phoenix(holder)) => {
            assert_eq!(holder.pid, std::process::id());
            assert!(
                holder
                    .to_string()
                    .contains(&format!("pid {}", std::process::id()))
            );
        }
        other => panic!("expected the first holder, got {other:?}"),
    }
    first.release().await.expect("releases");
    assert_eq!(comment(&client).await, None, "the pool is deleted");
    let Attempt::Acquired(second) = PoolLock::try_acquire(&client, LEASE, false).await.expect("tries") else {
        panic!("a released lock is taken again");
    };
    // A forced take-over: the first holder's release then leaves the new holder's lock alone.
    let Attempt::Acquired(forced) = PoolLock::try_acquire(&client, LEASE, true).await.expect("tries") else {
        panic!("--force-unlock takes a live lock");
    };
    second.release().await.expect("releases");
    let left = comment(&client).await.expect("still there");
    assert_eq!(Holder::parse(&left).as_ref(), Some(forced.holder()));
    forced.release().await.expect("releases");
}

#[tokio::test]
async fn a_stale_lock_is_taken_over_and_a_foreign_pool_never_is() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = fake.root_client().await;
    let mut dead = Holder::current(LEASE);
    dead.pid = 1;
    dead.token = "dead".to_owned();
    dead.expires = dead.started - 1;
    let form = Form::new()
        .text("poolid", LOCK_POOL)
        .text("comment", dead.to_text());
    client
        .post::<serde_json::Value>("/pools", &form)
        .await
        .expect("creates");
    let Attempt::Acquired(lock) = PoolLock::try_acquire(&client, LEASE, false).await.expect("tries") else {
        panic!("an expired lease is taken over");
    };
    lock.release().await.expect("releases");

    let form = Form::new()
        .text("poolid", LOCK_POOL)
        .text("comment", "the web servers");
    client
        .post::<serde_json::Value>("/pools", &form)
        .await
        .expect("creates");
    for force in [false, true] {
        match PoolLock::try_acquire(&client, LEASE, force).await.expect("tries") {
            Attempt::Held(held @ HeldBy::Other(_)) => {
                assert!(held.to_string().contains("that Phoenix did not create"));
            }
            other => panic!("a foreign pool is never taken, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn taking_and_releasing_the_lock_survive_a_transient_failure() {
    let Some(fake) = FakePve::start().await else {
        return;
    };
    let client = fake.root_client().await;
    fake.exec("pve.fail('POST', '/pools', 502, 'Bad Gateway', times=1)")
        .await;
    let Attempt::Acquired(lock) = PoolLock::try_acquire(&client, LEASE, false).await.expect("tries") else {
        panic!("a free lock is taken after one 502");
    };
    assert!(comment(&client).await.is_some());
    fake.exec("pve.fail('DELETE', '/pools', 503, 'Service Unavailable', times=1)")
        .await;
    lock.release().await.expect("released after one 503");
    assert_eq!(comment(&client).await, None);
}
