//! Custom cloud-init user-data: a Tera template of the configuration directory rendered per VM.
//!
//! The rendered text is written as a snippet on a snippets storage through the host channel and attached
//! with `cicustom`; it is compared by digest, so it changes only when the rendered content changes.

use phoenix_core::config::VmConfig;
use serde_json::json;

/// Renders the user-data template for one VM. The template sees `hostname`, `fqdn`, `domain`, `vmid`,
/// `username`, `ssh_public_keys` and the whole declared `vm`.
pub fn render_user_data(template: &str, vm: &VmConfig, domain: Option<&str>) -> Result<String, String> {
    let username = vm.user_config.as_ref().map(|user| user.username.clone());
    let keys = vm
        .user_config
        .as_ref()
        .map(|user| user.ssh_public_keys.clone())
        .unwrap_or_default();
    let fqdn = domain.map_or_else(|| vm.name.clone(), |domain| format!("{}.{domain}", vm.name));
    let context = json!({
        "hostname": vm.name,
        "fqdn": fqdn,
        "domain": domain,
        "vmid": vm.vmid,
        "username": username,
        "ssh_public_keys": keys,
        "vm": vm,
    });
    let context = tera::Context::from_value(context).map_err(|error| error.to_string())?;
    tera::Tera::one_off(template, &context, false).map_err(|error| {
        // Tera's own message is generic; its cause says what went wrong.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        message
    })
}

/// The snippet file name of a VM's user-data.
pub(crate) fn snippet_name(vmid: u32) -> String {
    format!("phoenix-{vmid}-user-data.yml")
}

#[cfg(test)]
mod tests {
    use phoenix_core::config::vm::UserConfig;

    use super::*;

    fn vm() -> VmConfig {
        VmConfig {
            vmid: 1001,
            name: "portainer".into(),
            user_config: Some(UserConfig {
                username: "ops".into(),
                password: None,
                ssh_public_keys: vec!["ssh-ed25519 AAAA ops@lab".into()],
            }),
            ..VmConfig::default()
        }
    }

    #[test]
    fn renders_the_vm_into_the_template() {
        let template = "hostname: {{ hostname }}\nfqdn: {{ fqdn }}\n{% for key in ssh_public_keys %}- {{ key }}\n{% endfor %}user: {{ vm.user_config.username }}\n";
        let rendered = render_user_data(template, &vm(), Some("lab.example.org")).expect("renders");
        assert_eq!(
            rendered,
            "hostname: portainer\nfqdn: portainer.lab.example.org\n- ssh-ed25519 AAAA ops@lab\nuser: ops\n"
        );
    }

    #[test]
    fn template_errors_say_what_is_wrong() {
        let error = render_user_data("{{ nope }}", &vm(), None).expect_err("unknown variable");
        assert!(error.contains("nope"), "{error}");
    }
}
