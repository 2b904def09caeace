//! A guest manager converging a fixture against fakepve through the engine.

use std::sync::Arc;

use phoenix_core::{ExecuteOptions, Manager, Managers, Plan, PlanOptions, Report, Resource};
use phoenix_pve::guests::GuestKit;
use phoenix_pve::lifecycle::GuestType;
use phoenix_pve::{Client, Form};
use serde_json::Value;

use crate::FakePve;

/// One fakepve, a client logged in to it as root, and the manager of one guest type, planning and applying
/// the same fixture resources every time.
pub struct Harness {
    /// The fake, to drive or to read the requests it answered.
    pub fake: FakePve,
    /// The client the manager uses.
    pub client: Arc<Client>,
    /// The one manager.
    pub managers: Managers,
    resources: Vec<Resource>,
    guests: GuestType,
}

impl Harness {
    /// Logs in to `fake` as root@pam ([`FakePve::root_client`]) and registers the manager `manager` builds
    /// from a guest kit of `guests` on the fake's node; [`Harness::plan`] plans `resources`.
    pub async fn connect<M: Manager + 'static>(
        fake: FakePve,
        guests: GuestType,
        resources: Vec<Resource>,
        manager: impl FnOnce(GuestKit) -> M,
    ) -> Harness {
        let client = fake.root_client().await;
        let mut managers = Managers::default();
        managers.register(Arc::new(manager(crate::fakepve::kit(&client, guests))));
        Harness {
            fake,
            client,
            managers,
            resources,
            guests,
        }
    }

    /// Plans the fixture against what the fake holds.
    pub async fn plan(&self) -> Plan {
        crate::plan(self.resources.clone(), &self.managers, &PlanOptions::default()).await
    }

    /// Runs a plan to its end.
    pub async fn apply(&self, plan: &Plan) -> Report {
        crate::apply(plan, &self.managers, &ExecuteOptions::default()).await
    }

    /// Every request that changed something, as `METHOD path`, leaving out logins.
    pub async fn writes(&self) -> Vec<String> {
        self.fake.writes().await
    }

    /// Changes a guest's config as an operator would by hand.
    pub async fn edit_by_hand(&self, vmid: u32, form: &Form) {
        let _: Value = self
            .client
            .put(&self.config_path(vmid), form)
            .await
            .expect("edits");
    }

    /// A guest's config as Proxmox answers it.
    pub async fn config(&self, vmid: u32) -> Value {
        self.client
            .get(&self.config_path(vmid), &[])
            .await
            .expect("reads")
    }

    fn config_path(&self, vmid: u32) -> String {
        format!("/nodes/pve1/{}/{vmid}/config", self.guests.segment())
    }
}
