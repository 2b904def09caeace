//! The edge's manager: `sync/traefik`, `dynamic_conf.yml` in the directory the Traefik container's file
//! provider watches, and `sync/gateway`, the nginx gateway's site ([`crate::gateway`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use phoenix_core::traefik::{self, DYNAMIC_DIRECTORY, DYNAMIC_FILE};
use phoenix_core::{
    Address, Change, Desired, Manager, ManagerError, Observed, Resource, ResourceKind, Round, SyncStep,
    diff_owned,
};

use phoenix_core::engine::change::diff_declared;

use phoenix_core::certificates::CertificateSync;
use phoenix_core::config::common::Secret;
use phoenix_core::dns::InternalDns;
use phoenix_core::dns::public::PublicZone;
use phoenix_pve::guest::OnHost;

use crate::certificates;
use crate::dns;
use crate::gateway::{self, Site};
use crate::public_dns;
use phoenix_pve::guest::{GuestExec, LxcAttach, failure, host_error};
use phoenix_pve::host::HostChannel;

/// Reading or writing one small file in a container.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The exit status of the read when the file is not there.
const ABSENT: i32 = 100;

/// Reads `$1/$2`; exits 100 when it is not there.
const READ: &str = "test -e \"$1/$2\" || exit 100; cat \"$1/$2\"";

/// Writes standard input to `$1/$2` atomically: a temporary file in the same directory, then a rename.
/// The temporary name ends in neither `.yml`, `.yaml` nor `.toml`, so Traefik, which watches the
/// directory, never reads a half-written file.
const WRITE: &str =
    "umask 022 && mkdir -p \"$1\" && cat > \"$1/.$2.phoenix-new\" && mv -f \"$1/.$2.phoenix-new\" \"$1/$2\"";

/// The manager of the sync steps Phoenix writes: `sync/traefik` (reads the live dynamic configuration in
/// the Traefik container and replaces it when a definition differs) and, when given its site,
/// `sync/gateway`. DNS is not managed, so unplanned.
pub struct EdgeManager {
    host: Arc<dyn HostChannel>,
    /// The gateway's rendered files, and the channel into its container (`lxc-attach` when not given).
    gateway: Option<(Site, Option<Arc<dyn GuestExec>>)>,
    /// The channel to the internal DNS view's dnsmasq, when not the one its declaration implies.
    dns: Option<Arc<dyn GuestExec>>,
    /// The channel to issuers' CA containers, when not `lxc-attach` (a test's).
    ca: Option<Arc<dyn GuestExec>>,
    /// What relative secret files (TSIG keys) and issuers' CA files are read against.
    config_dir: PathBuf,
    /// What time it is, for whether a certificate is current.
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

impl EdgeManager {
    /// Writes through this channel to the node that runs the Traefik and gateway containers.
    pub fn new(host: Arc<dyn HostChannel>) -> EdgeManager {
        EdgeManager {
            host,
            gateway: None,
            dns: None,
            ca: None,
            config_dir: PathBuf::from("."),
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Reads issuers' CA roots through `exec` instead of `lxc-attach` into their containers.
    pub fn with_ca_in(mut self, exec: Arc<dyn GuestExec>) -> EdgeManager {
        self.ca = Some(exec);
        self
    }

    /// Takes the time from `clock` (a test's, to see a certificate age).
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> SystemTime + Send + Sync>) -> EdgeManager {
        self.clock = clock;
        self
    }

    fn node(&self) -> OnHost {
        OnHost {
            host: Arc::clone(&self.host),
            name: "the node".to_owned(),
        }
    }

    /// Reads a secret of the configuration: an environment variable, a file, or the value written inline.
    fn secret(&self, secret: &Secret) -> Result<String, String> {
        phoenix_pve::resolve_secret(secret, &|name| std::env::var(name).ok(), &self.config_dir)
            .map(|secret| secret.expose().to_owned())
            .map_err(|error| error.to_string())
    }

    /// Reads secrets given as relative files (`{"file": "..."}`) from `dir`, the configuration directory.
    pub fn with_config_dir(mut self, dir: impl Into<PathBuf>) -> EdgeManager {
        self.config_dir = dir.into();
        self
    }

    /// The authoritative server of `zone`, with its TSIG key read.
    fn public_server(&self, zone: &PublicZone) -> Result<public_dns::wire::Server, ManagerError> {
        let secret = |secret: &Secret| {
            self.secret(secret)
                .map_err(|error| format!("the TSIG key of zone {}: {error}", zone.zone))
        };
        public_dns::server(zone, &secret).map_err(ManagerError::failed)
    }

    /// Manages `sync/gateway` with these rendered files.
    pub fn with_gateway(mut self, site: Site) -> EdgeManager {
        self.gateway = Some((site, None));
        self
    }

    /// Manages `sync/gateway` with these rendered files, reaching its container through `exec` (and
    /// writing http-01 answers through it).
    pub fn with_gateway_in(mut self, site: Site, exec: Arc<dyn GuestExec>) -> EdgeManager {
        self.gateway = Some((site, Some(exec)));
        self
    }

    /// Reaches the internal DNS view's dnsmasq through `exec` instead of the node or its container.
    pub fn with_dns_in(mut self, exec: Arc<dyn GuestExec>) -> EdgeManager {
        self.dns = Some(exec);
        self
    }

    /// Issues or corrects `certificate`: its http-01 answers go into the container that serves them and its
    /// CA's root is read from the CA's container, each through the channel a test gave or `lxc-attach`.
    async fn certificate(&self, certificate: &CertificateSync, change: &Change) -> Result<(), ManagerError> {
        let secret = |secret: &Secret| self.secret(secret);
        let web = certificate
            .challenge_web
            .as_ref()
            .map(|(ctid, _)| match &self.gateway {
                Some((_, Some(exec))) => Arc::clone(exec),
                _ => Arc::new(self.container(*ctid)) as Arc<dyn GuestExec>,
            });
        let ca = certificate
            .server
            .as_ref()
            .and_then(|issuer| issuer.ca_container)
            .map(|ctid| match &self.ca {
                Some(exec) => Arc::clone(exec),
                None => Arc::new(self.container(ctid)) as Arc<dyn GuestExec>,
            });
        let context = certificates::Issuing {
            node: &self.node(),
            secret: &secret,
            config_dir: &self.config_dir,
            web,
            ca,
        };
        certificates::apply(&context, certificate, change).await
    }

    /// The channel to the dnsmasq of `view`, and whether it can be used now (its container runs).
    async fn dns_channel(&self, view: &InternalDns) -> Result<(Arc<dyn GuestExec>, bool), ManagerError> {
        if let Some(exec) = &self.dns {
            return Ok((Arc::clone(exec), true));
        }
        match view.container {
            Some(ctid) => Ok((Arc::new(self.container(ctid)), self.running(ctid).await?)),
            None => Ok((Arc::new(self.node()), true)),
        }
    }

    /// Whether the gateway's container can be reached: it runs, for `lxc-attach`; a channel given with
    /// [`EdgeManager::with_gateway_in`] is taken as it is.
    async fn gateway_reachable(&self, container: u32) -> Result<bool, ManagerError> {
        match &self.gateway {
            Some((_, Some(_))) => Ok(true),
            _ => self.running(container).await,
        }
    }

    /// The gateway's site and the channel into `container`.
    fn gateway(&self, container: u32) -> Option<(&Site, Arc<dyn GuestExec>)> {
        let (site, exec) = self.gateway.as_ref()?;
        let exec = match exec {
            Some(exec) => Arc::clone(exec),
            None => Arc::new(self.container(container)),
        };
        Some((site, exec))
    }

    fn container(&self, ctid: u32) -> LxcAttach {
        LxcAttach {
            host: Arc::clone(&self.host),
            ctid,
        }
    }

    /// Whether the container runs: a file can be read or written only then.
    async fn running(&self, ctid: u32) -> Result<bool, ManagerError> {
        let argv = ["lxc-info", "-n", &ctid.to_string(), "-s"].map(str::to_owned);
        let output = self.host.run(&argv, None, TIMEOUT).await.map_err(host_error)?;
        Ok(output.success() && output.stdout.contains("RUNNING"))
    }

    /// The live file, `None` when it is absent or the container does not run (yet).
    async fn read(&self, ctid: u32) -> Result<Option<Observed>, ManagerError> {
        if !self.running(ctid).await? {
            return Ok(None);
        }
        let container = self.container(ctid);
        let output = container
            .exec(&script(READ), None, &BTreeMap::new(), TIMEOUT)
            .await?;
        match output.status {
            Some(0) => Ok(Some(traefik::observed(&output.stdout))),
            Some(ABSENT) => Ok(None),
            _ => Err(failure(
                &container,
                &format!("reading {DYNAMIC_DIRECTORY}/{DYNAMIC_FILE}"),
                &output,
            )),
        }
    }
}

/// The sync step a resource declares.
fn sync_step(desired: &Resource) -> Option<&SyncStep> {
    match &desired.desired {
        Desired::Sync(step) => Some(step),
        _ => None,
    }
}

/// `sh -c SCRIPT sh DIRECTORY FILE`: the paths are arguments, never part of the script.
fn script(body: &str) -> Vec<String> {
    ["/bin/sh", "-c", body, "sh", DYNAMIC_DIRECTORY, DYNAMIC_FILE]
        .map(str::to_owned)
        .to_vec()
}

#[async_trait]
impl Manager for EdgeManager {
    fn kind(&self) -> ResourceKind {
        ResourceKind::Sync
    }

    fn manages(&self, desired: &Resource) -> bool {
        match sync_step(desired) {
            Some(SyncStep::Gateway(_)) => self.gateway.is_some(),
            Some(
                SyncStep::Traefik(_)
                | SyncStep::InternalDns(_)
                | SyncStep::PublicDns(_)
                | SyncStep::Certificate(_),
            ) => true,
            None => false,
        }
    }

    async fn observe(
        &self,
        desired: &[Resource],
        _round: Round,
    ) -> Result<BTreeMap<Address, Observed>, ManagerError> {
        let mut observed = BTreeMap::new();
        for resource in desired {
            let live = match sync_step(resource) {
                Some(SyncStep::Traefik(step)) => self.read(step.proxy).await?,
                Some(SyncStep::InternalDns(view)) => {
                    let (exec, reachable) = self.dns_channel(view).await?;
                    match reachable {
                        true => dns::observe(exec.as_ref()).await?.map(Observed::new),
                        false => None,
                    }
                }
                Some(SyncStep::Certificate(certificate)) => {
                    certificates::observe(&self.node(), certificate, (self.clock)()).await?
                }
                Some(SyncStep::PublicDns(zone)) => {
                    let server = self.public_server(zone)?;
                    Some(public_dns::observe(&server, zone).await?)
                }
                Some(SyncStep::Gateway(step)) => match self.gateway(step.container) {
                    Some((site, exec)) if self.gateway_reachable(step.container).await? => {
                        let fields = gateway::observe(exec.as_ref(), site).await?;
                        (!fields.is_empty()).then_some(Observed::new(fields))
                    }
                    _ => None,
                },
                None => None,
            };
            if let Some(live) = live {
                observed.insert(resource.address.clone(), live);
            }
        }
        Ok(observed)
    }

    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change> {
        let address = &desired.address;
        match sync_step(desired) {
            Some(SyncStep::Certificate(certificate)) => {
                diff_declared(address, certificate.fields(), observed)
            }
            Some(SyncStep::PublicDns(zone)) => public_dns::diff(address, zone, observed),
            Some(SyncStep::InternalDns(view)) => diff_owned(address, dns::fields(view), observed),
            Some(SyncStep::Gateway(_)) if let Some((site, _)) = &self.gateway => {
                diff_declared(address, gateway::fields(site), observed)
            }
            _ => diff_owned(address, desired.declared_fields(), observed),
        }
    }

    async fn apply(&self, desired: Option<&Resource>, change: &Change) -> Result<(), ManagerError> {
        let step = match desired.and_then(sync_step) {
            Some(SyncStep::Certificate(certificate)) => return self.certificate(certificate, change).await,
            Some(SyncStep::PublicDns(zone)) => {
                let server = self.public_server(zone)?;
                return public_dns::apply(&server, zone, change).await;
            }
            Some(SyncStep::InternalDns(view)) => {
                let (exec, reachable) = self.dns_channel(view).await?;
                if !reachable {
                    return Err(ManagerError::failed(format!(
                        "{} does not run, so the internal DNS view cannot be written there",
                        exec.describe()
                    )));
                }
                return dns::apply(exec.as_ref(), view).await;
            }
            Some(SyncStep::Gateway(step)) => {
                let (site, exec) = self
                    .gateway(step.container)
                    .ok_or_else(|| ManagerError::failed("the gateway's site was not rendered"))?;
                if !self.gateway_reachable(step.container).await? {
                    return Err(ManagerError::failed(format!(
                        "container {} does not run, so the gateway's site cannot be written there",
                        step.container
                    )));
                }
                let changed: Vec<String> = change.fields.iter().map(|field| field.field.clone()).collect();
                return gateway::apply(exec.as_ref(), site, &changed).await;
            }
            Some(SyncStep::Traefik(step)) => step,
            None => {
                return Err(ManagerError::failed(format!(
                    "{} is not a sync step Phoenix writes",
                    change.address
                )));
            }
        };
        let container = self.container(step.proxy);
        if !self.running(step.proxy).await? {
            return Err(ManagerError::failed(format!(
                "{} does not run, so {DYNAMIC_DIRECTORY}/{DYNAMIC_FILE} cannot be written there",
                container.describe()
            )));
        }
        let text = step.config.to_yaml();
        let output = container
            .exec(&script(WRITE), Some(text.as_bytes()), &BTreeMap::new(), TIMEOUT)
            .await?;
        if !output.success() {
            return Err(failure(
                &container,
                &format!("writing {DYNAMIC_DIRECTORY}/{DYNAMIC_FILE}"),
                &output,
            ));
        }
        tracing::info!(
            container = step.proxy,
            bytes = text.len(),
            "wrote Traefik's dynamic configuration"
        );
        Ok(())
    }
}
