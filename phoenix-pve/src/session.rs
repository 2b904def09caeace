//! [`Session`]: what every manager of one run against a live Proxmox shares, built from the model and the
//! environment: the API client, the cluster listing (read once per round), the node for guests that name
//! none, the host channel, and the configuration directory secrets and templates are found in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use phoenix_core::Estate;
use phoenix_core::config::hypervisor::StorageDecl;
use serde_json::Value;

use crate::client::Client;
use crate::cluster::{Cluster, Placements};
use crate::error::PveError;
use crate::guests::GuestKit;
use crate::host::{HostChannel, LocalHost, SshHost};
use crate::lifecycle::GuestType;
use crate::settings::{Settings, SettingsError};

/// One run's connection to a Proxmox cluster.
#[derive(Clone)]
pub struct Session {
    client: Arc<Client>,
    cluster: Arc<Cluster>,
    default_node: String,
    host: Option<Arc<dyn HostChannel>>,
    /// The host channels of the other nodes of a cluster, by name.
    hosts: BTreeMap<String, Arc<dyn HostChannel>>,
    config_dir: PathBuf,
}

/// Why no session could be opened.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SessionError {
    /// The settings are incomplete or wrong.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Settings(#[from] SettingsError),
    /// The cluster did not answer, or refused the credentials.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Connect(#[from] PveError),
    /// The cluster has several nodes and the configuration names none.
    #[error("the cluster has {nodes} nodes and the configuration names none")]
    #[diagnostic(
        code(phoenix::session::which_node),
        help("list the cluster's nodes in `proxmox.nodes`")
    )]
    WhichNode {
        /// How many nodes the cluster has.
        nodes: usize,
    },
}

impl Session {
    /// Connects to the cluster the configuration names (the environment wins, see [`Settings::resolve`]).
    /// The default node is the first of `proxmox.nodes`, else the cluster's only node. The host channel is
    /// `proxmox.ssh`: `local`, or an SSH destination; without it, local when this machine is a node.
    /// `PHOENIX_SSH_CONFIG` names an ssh config file that replaces the user's (`ssh -F`).
    pub async fn open(
        estate: &Estate,
        config_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Session, SessionError> {
        let connection = estate.files().hypervisor.proxmox.as_ref();
        let settings = Settings::resolve(connection, env, config_dir)?;
        let client = Arc::new(Client::connect(settings).await?);
        let configured = connection.and_then(|connection| connection.nodes.first().cloned());
        let default_node = match configured {
            Some(node) => node,
            None => {
                let nodes: Vec<Value> = client.get("/nodes", &[]).await?;
                match nodes.as_slice() {
                    [only] => only["node"].as_str().unwrap_or_default().to_owned(),
                    _ => return Err(SessionError::WhichNode { nodes: nodes.len() }),
                }
            }
        };
        let channel = |ssh: Option<&str>| -> Option<Arc<dyn HostChannel>> {
            match ssh {
                Some("local") => Some(Arc::new(LocalHost)),
                Some(destination) => Some(Arc::new(ssh_host(destination, env, config_dir))),
                None if Path::new("/etc/pve").is_dir() => Some(Arc::new(LocalHost)),
                None => None,
            }
        };
        let ssh_for = |node: &str| connection.and_then(|connection| connection.ssh_for(node));
        let host = channel(ssh_for(&default_node).as_deref());
        let mut session = Session::new(client, default_node.clone(), host, config_dir).placing(estate);
        for node in connection
            .map(|connection| connection.nodes.as_slice())
            .unwrap_or_default()
        {
            if *node != default_node
                && let Some(host) = channel(ssh_for(node).as_deref())
            {
                session.hosts.insert(node.clone(), host);
            }
        }
        Ok(session)
    }

    /// The session, placing the guests of `estate` that name no node by its `proxmox.placement`
    /// (see [`Cluster::for_estate`]). Call it before taking kits.
    pub fn placing(mut self, estate: &Estate) -> Session {
        self.cluster = Arc::new(Cluster::new(Arc::clone(&self.client)).for_estate(estate));
        self
    }

    /// Where new guests go, as placed when the cluster was last read.
    pub fn placements(&self) -> &Placements {
        self.cluster.placements()
    }

    /// A session over a connected client (tests build theirs this way).
    pub fn new(
        client: Arc<Client>,
        default_node: impl Into<String>,
        host: Option<Arc<dyn HostChannel>>,
        config_dir: impl Into<PathBuf>,
    ) -> Session {
        Session {
            cluster: Arc::new(Cluster::new(Arc::clone(&client))),
            client,
            default_node: default_node.into(),
            host,
            hosts: BTreeMap::new(),
            config_dir: config_dir.into(),
        }
    }

    /// A kit for one kind of guest, sharing this session's client and cluster listing.
    pub fn kit(&self, kind: GuestType) -> GuestKit {
        GuestKit::new(
            Arc::clone(&self.client),
            Arc::clone(&self.cluster),
            kind,
            self.default_node.clone(),
        )
    }

    /// The cluster listing every manager of the session shares, read once per round.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The node of resources that name none.
    pub fn default_node(&self) -> &str {
        &self.default_node
    }

    /// The API client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// `https://host:8006`.
    pub fn endpoint(&self) -> &str {
        &self.client.settings().endpoint
    }

    /// How to run commands on the default node, when Phoenix can.
    pub fn host(&self) -> Option<&Arc<dyn HostChannel>> {
        self.host.as_ref()
    }

    /// How to run commands on `node`, when Phoenix can.
    pub fn host_on(&self, node: &str) -> Option<&Arc<dyn HostChannel>> {
        if node == self.default_node {
            return self.host.as_ref();
        }
        self.hosts.get(node)
    }

    /// The host channels of the nodes other than the default one, by name.
    pub fn other_hosts(&self) -> impl Iterator<Item = (&str, &Arc<dyn HostChannel>)> {
        self.hosts.iter().map(|(node, host)| (node.as_str(), host))
    }

    /// The same session, reaching `node` through `host` (tests give each node of a cluster its own).
    pub fn with_host_on(mut self, node: impl Into<String>, host: Arc<dyn HostChannel>) -> Session {
        self.hosts.insert(node.into(), host);
        self
    }

    /// Where relative secret files and templates are found.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }
}

/// The SSH channel to `destination`; with `PHOENIX_SSH_CONFIG` set and not empty, it reads that ssh config
/// file (`ssh -F`) instead of the user's. A relative path is resolved against the configuration directory,
/// as secret and CA files are.
pub(crate) fn ssh_host(
    destination: &str,
    env: &dyn Fn(&str) -> Option<String>,
    config_dir: &Path,
) -> SshHost {
    let host = SshHost::new(destination);
    match env("PHOENIX_SSH_CONFIG").filter(|file| !file.is_empty()) {
        Some(file) => host.with_config(config_dir.join(file)),
        None => host,
    }
}

/// The first declared Proxmox storage with a content type (`import`, `snippets`), else `local`, where a
/// fresh Proxmox has every content type a directory storage can hold.
pub fn storage_for(storages: &[StorageDecl], content: &str) -> String {
    storages
        .iter()
        .find(|storage| storage.content.iter().any(|declared| declared == content))
        .map_or_else(|| "local".to_owned(), |storage| storage.id.clone())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::ssh_host;

    #[test]
    fn phoenix_ssh_config_names_the_ssh_config_file() {
        let dir = Path::new("/etc/phoenix");
        let unset = ssh_host("root@pve1", &|_| None, dir);
        assert_eq!(unset.config(), None);
        let empty = ssh_host("root@pve1", &|_| Some(String::new()), dir);
        assert_eq!(empty.config(), None);
        let variable =
            |file: &'static str| move |name: &str| (name == "PHOENIX_SSH_CONFIG").then(|| file.to_owned());
        let absolute = ssh_host("node", &variable("/run/node/ssh_config"), dir);
        assert_eq!(absolute.config(), Some(Path::new("/run/node/ssh_config")));
        let relative = ssh_host("node", &variable("ssh/config"), dir);
        assert_eq!(relative.config(), Some(Path::new("/etc/phoenix/ssh/config")));
    }
}
