//! Types shared by several configuration files: secrets, firewall rules, health checks and Traefik routes.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A value that should not live in the configuration file itself.
///
/// Written as a plain string (accepted, but validation warns and names the key), as `{"env": "NAME"}`
/// (read from an environment variable at run time) or as `{"file": "path"}` (read from a file, relative
/// paths resolved against the configuration directory).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The secret written inline. Works, but draws a warning.
    Plain(String),
    /// The name of an environment variable that holds the secret.
    Env(String),
    /// A file whose content (trailing newline removed) is the secret.
    File(PathBuf),
}

impl Secret {
    /// Whether the secret is written inline in the configuration.
    pub fn is_plaintext(&self) -> bool {
        matches!(self, Secret::Plain(_))
    }
}

impl fmt::Debug for Secret {
    // Never print an inline secret, not even in debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(<redacted>)"),
            Secret::Env(name) => write!(f, "Secret::Env({name:?})"),
            Secret::File(path) => write!(f, "Secret::File({path:?})"),
        }
    }
}

impl Serialize for Secret {
    // The same forms the configuration file uses, so that a serialised config reads back unchanged.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Secret::Plain(value) => serializer.serialize_str(value),
            Secret::Env(name) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("env", name)?;
                map.end()
            }
            Secret::File(path) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("file", path)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;

        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = Secret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a string, {"env": "NAME"} or {"file": "path"}"#)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret::Plain(value.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(r#"expected exactly one of "env" or "file""#));
                };
                let secret = match key.as_str() {
                    "env" => Secret::Env(map.next_value()?),
                    "file" => Secret::File(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, &["env", "file"])),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(r#"expected exactly one of "env" or "file""#));
                }
                Ok(secret)
            }
        }

        deserializer.deserialize_any(SecretVisitor)
    }
}

/// The firewall of one guest: whether it is on, and its rules.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestFirewall {
    /// Turns the guest firewall on (and sets `firewall=1` on its network interface).
    #[serde(default)]
    pub enabled: bool,
    /// Rules, compared by content with what Proxmox holds.
    #[serde(default)]
    pub rules: Vec<FirewallRule>,
}

/// One firewall rule, for a guest or for the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallRule {
    /// Direction: `in` or `out`; or `group`, a rule that jumps to the security group named by `action`.
    #[serde(rename = "type")]
    pub direction: Direction,
    /// What to do with matching packets; for a `group` rule, the security group's name.
    pub action: RuleAction,
    /// A Proxmox macro (`SSH`, `HTTPS`, `Ping`) that supplies the protocol and ports.
    #[serde(default, rename = "macro")]
    pub macro_name: Option<String>,
    /// Protocol name (`tcp`, `udp`, `icmp`, ...) or number.
    #[serde(default)]
    pub proto: Option<String>,
    /// Destination port(s): `22`, `8000:8010`, or a comma list of both.
    #[serde(default)]
    pub port: Option<String>,
    /// Source port(s), same syntax as `port`.
    #[serde(default)]
    pub sport: Option<String>,
    /// Source address: an IP, a CIDR, or a comma list of both.
    #[serde(default)]
    pub source: Option<String>,
    /// Destination address: an IP, a CIDR, or a comma list of both.
    #[serde(default)]
    pub dest: Option<String>,
    /// Free text kept with the rule in Proxmox.
    #[serde(default)]
    pub comment: Option<String>,
    /// Whether the rule is active (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl FirewallRule {
    /// The security group a `group` rule jumps to.
    pub fn group(&self) -> Option<&str> {
        (self.direction == Direction::Group).then(|| self.action.as_str())
    }
}

/// Direction of a firewall rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Incoming traffic.
    In,
    /// Outgoing traffic.
    Out,
    /// A jump to a security group (Proxmox's rule type `group`).
    Group,
}

/// The `action` of a rule: a verdict, or the name of a security group for a `group` rule. The schema says
/// which one a rule may have; the text is read as a verdict when it is one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum RuleAction {
    /// `ACCEPT`, `DROP` or `REJECT`.
    Verdict(FirewallAction),
    /// A security group, by name.
    Group(String),
}

impl RuleAction {
    /// The action as Proxmox writes it.
    pub fn as_str(&self) -> &str {
        match self {
            RuleAction::Verdict(FirewallAction::Accept) => "ACCEPT",
            RuleAction::Verdict(FirewallAction::Drop) => "DROP",
            RuleAction::Verdict(FirewallAction::Reject) => "REJECT",
            RuleAction::Group(name) => name,
        }
    }
}

impl From<String> for RuleAction {
    fn from(text: String) -> RuleAction {
        match text.as_str() {
            "ACCEPT" => RuleAction::Verdict(FirewallAction::Accept),
            "DROP" => RuleAction::Verdict(FirewallAction::Drop),
            "REJECT" => RuleAction::Verdict(FirewallAction::Reject),
            _ => RuleAction::Group(text),
        }
    }
}

impl From<RuleAction> for String {
    fn from(action: RuleAction) -> String {
        action.as_str().to_owned()
    }
}

impl From<FirewallAction> for RuleAction {
    fn from(action: FirewallAction) -> RuleAction {
        RuleAction::Verdict(action)
    }
}

/// Verdict of a firewall rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FirewallAction {
    /// Let the packet through.
    Accept,
    /// Silently discard the packet.
    Drop,
    /// Discard the packet and tell the sender.
    Reject,
}

/// A command run inside a guest until it succeeds, after features and the application script.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Command line run inside the guest; exit status 0 means healthy.
    pub command: String,
    /// How many attempts before the guest is reported unhealthy.
    #[serde(default = "default_health_retries")]
    pub retries: u32,
    /// Seconds between attempts.
    #[serde(default = "default_health_interval")]
    pub interval: u32,
}

fn default_health_retries() -> u32 {
    3
}

fn default_health_interval() -> u32 {
    5
}

/// A route that the Traefik sync step publishes for a guest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraefikService {
    /// Service and router name; also the host name under the domain (`<name>.<domain_name>`).
    pub name: String,
    /// Port the guest serves on.
    pub port: u16,
    /// Scheme Traefik uses to reach the guest (default `http`).
    #[serde(default)]
    pub scheme: Option<Scheme>,
}

/// URL scheme of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

/// What a guest is to Portainer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortainerRole {
    /// Not part of Portainer.
    #[default]
    None,
    /// Runs the Portainer server; at most one guest has this role.
    Primary,
    /// Runs a Portainer agent and is registered as an environment of the primary.
    Agent,
    /// Infrastructure the Portainer estate relies on (gateway, proxy); not a Portainer node.
    Infrastructure,
}
