//! A fakepve server per test, driven through the harness in `fakepve/harness.py` of this crate.
//!
//! The Python interpreter comes from `PHOENIX_FAKEPVE_PYTHON`, or `target/fakepve-venv/bin/python`, where
//! `.ci/run` installs fakepve. Without it a test is skipped with a loud message, except under `CI=true`,
//! where a missing fake is a failure.
//!
//! Every fake also keeps the state of the host endpoints fakepve accepts but forgets (a node's DNS, time
//! zone and network, users, groups, roles, ACLs and API tokens), still validated by fakepve's schema: see
//! `fakepve/README.md` and `fakepve/host_state.py`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::RetryPolicy;
use phoenix_pve::guests::GuestKit;
use phoenix_pve::lifecycle::GuestType;
use phoenix_pve::{Auth, Client, SecretString, Settings, TlsTrust};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What the harness prints once it listens: where the fake is and how to log in.
#[derive(Debug, Deserialize)]
pub struct Info {
    pub url: String,
    pub control: String,
    pub cafile: String,
    pub fingerprint: String,
    pub token_id: String,
    pub token_secret: String,
    pub user: String,
    pub password: String,
}

const RESIZE_LIKE_PROXMOX: &str = r#"
import re
original = pve.answer
async def answer(request, match, params, user, call=None):
    result = await original(request, match, params, user, call)
    if match is not None and request.method == 'PUT' and match.template == '/nodes/{node}/qemu/{vmid}/resize':
        vm = pve.vm(int(match.params['vmid']))
        disk, size = params.get('disk'), str(params.get('size', ''))
        value = vm.config.get(disk)
        if value and size and not size.startswith('+'):
            vm.config[disk] = re.sub(r'size=[^,]*', 'size=' + size, value) if 'size=' in value else value + ',size=' + size
    return result
pve.answer = answer
"#;

const GUEST_AGENT: &str = r#"
import hashlib, os, subprocess
import fakepve.model as model
import fakepve.agent as guest_agent
hanging = set(HANGING)
docker_host = DOCKER_ENGINE
original_init = model.FakeVm.__init__
def init(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    self.agent = {'exec': {}}
    self.agent_hangs = self.vmid in hanging
    self.phoenix_records = {}
    self.phoenix_runs = []
    self.phoenix_scripts = {}
    self.phoenix_files = {}
model.FakeVm.__init__ = init
original_result = guest_agent.result
def result(vm, command, values):
    answer = original_result(vm, command, values)
    if command == 'exec':
        argv = values['command'] if isinstance(values['command'], list) else [values['command']]
        data = values.get('input-data') or ''
        core = argv[argv.index('/bin/sh'):] if '/bin/sh' in argv else argv
        out, err, code = '', '', 0
        run, extra = argv, {}
        if run[0] == '/usr/bin/env':
            run = run[1:]
            while run and '=' in run[0]:
                name, value = run[0].split('=', 1)
                extra[name] = value
                run = run[1:]
        if run and run[0] in ('docker', 'docker-compose') and docker_host:
            done = subprocess.run(run, input=data.encode(), capture_output=True, env=dict(os.environ, DOCKER_HOST=docker_host, **extra))
            out, err, code = done.stdout.decode(), done.stderr.decode(), done.returncode
        elif run and run[0] in ('docker', 'docker-compose'):
            err, code = 'sh: ' + run[0] + ': not found', 127
        elif core[1:2] == ['-c'] and core[2].startswith('set -e; umask 077; mkdir -p') and len(core) == 5:
            vm.phoenix_files[core[4]] = data
        elif run and run[0] == 'sha256sum':
            for path in run[2:]:
                if path in vm.phoenix_files:
                    out += hashlib.sha256(vm.phoenix_files[path].encode()).hexdigest() + '  ' + path + '\n'
                else:
                    err, code = err + 'sha256sum: ' + path + ': No such file or directory\n', 1
        elif run and run[0] == 'find' and '-exec' in run:
            top = run[1].rstrip('/') + '/'
            keep = {run[i + 2] for i, arg in enumerate(run) if arg == '!' and run[i + 1] == '-name'}
            for path in list(vm.phoenix_files):
                if path.startswith(top) and path[len(top):].split('/')[0] not in keep:
                    del vm.phoenix_files[path]
        elif len(core) == 2 and core[1].startswith('/var/lib/phoenix/scripts/'):
            text = vm.phoenix_scripts.get(core[1], '')
            vm.phoenix_runs.append(text)
            if 'PHOENIX_TEST_FAIL' in text:
                out, err, code = 'partial', 'boom', 3
        elif core[1:2] == ['-c'] and 'mkdir -p /var/lib/phoenix/scripts' in core[2]:
            vm.phoenix_scripts['/var/lib/phoenix/scripts/' + core[3]] = data
        elif core[1:2] == ['-c'] and core[2].startswith('mkdir -p /var/lib/phoenix/features'):
            vm.phoenix_records[core[3]] = data.strip()
        elif core[1:2] == ['-c'] and core[2].startswith('for f in /var/lib/phoenix/features'):
            out = ''.join('{0} {1}\n'.format(k, v) for k, v in sorted(vm.phoenix_records.items()))
        elif core[1:2] == ['-c'] and 'false' in core[2]:
            code = 1
        vm.agent['exec'][' '.join(argv)] = {'exited': 1, 'exitcode': code, 'out-data': out, 'err-data': err}
    return answer
guest_agent.result = result
"#;

/// One fakepve server, stopped when dropped.
pub struct FakePve {
    pub info: Info,
    child: Child,
    control: reqwest::Client,
}

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("PHOENIX_FAKEPVE_PYTHON") {
        return PathBuf::from(path);
    }
    crate::workspace().join("target/fakepve-venv/bin/python")
}

impl FakePve {
    /// Starts a fake; `None` (after saying why) when fakepve is not installed and this is not CI.
    pub async fn start() -> Option<FakePve> {
        FakePve::start_with_log(Stdio::inherit()).await
    }

    /// [`FakePve::start`], with the server's own log (tracebacks of dropped connections and the like) sent
    /// to `log` instead of this process's standard error.
    pub async fn start_with_log(log: impl Into<Stdio>) -> Option<FakePve> {
        let python = python();
        if !python.exists() {
            let message = format!(
                "fakepve is not installed ({} is missing): run `python3 -m venv target/fakepve-venv && target/fakepve-venv/bin/pip install 'fakepve[crypto]==0.5.0'`",
                python.display()
            );
            crate::unavailable(&message);
            return None;
        }
        let harness = concat!(env!("CARGO_MANIFEST_DIR"), "/fakepve/harness.py");
        let mut child = Command::new(python)
            .arg(harness)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the fakepve harness starts");
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let read = reader.read_line(&mut line);
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("fakepve starts within a minute")
            .expect("reads");
        let info: Info =
            serde_json::from_str(&line).unwrap_or_else(|error| panic!("harness said {line:?}: {error}"));
        phoenix_pve::install_crypto_provider();
        Some(FakePve {
            info,
            child,
            control: reqwest::Client::new(),
        })
    }

    /// Kills the server process: from now on every connection is refused, as when a node dies.
    pub fn kill(&self) {
        let pid = self.child.id().expect("the fake runs").to_string();
        let killed = std::process::Command::new("kill").args(["-KILL", &pid]).status();
        assert!(killed.is_ok_and(|status| status.success()), "kill -KILL {pid}");
    }

    /// Runs Python against the fake (`pve` is in scope, `await` allowed); returns what it put in `result`.
    pub async fn exec(&self, code: &str) -> Value {
        let response = self
            .control
            .post(format!("{}/exec", self.info.control))
            .json(&json!({ "code": code }))
            .send()
            .await
            .expect("control endpoint answers");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert!(status.is_success(), "control code failed: {code}\n{body}");
        body["result"].clone()
    }

    /// fakepve answers VM disk resizes without resizing (the endpoint is outside its hand-written areas);
    /// this teaches it what Proxmox does, so that a grown disk reads back grown.
    pub async fn resize_vm_disks_like_proxmox(&self) {
        self.exec(RESIZE_LIKE_PROXMOX).await;
    }

    /// fakepve's guest agent answers every command with success and no output, and runs nothing. This
    /// gives every VM an agent that behaves like a guest running Phoenix's scripts: it keeps the feature
    /// records written to it, lists them back, and fails a script containing `PHOENIX_TEST_FAIL` (exit 3,
    /// "boom" on stderr) and a health check containing `false`. VMs whose ID is in `hanging` get an
    /// agent that never answers.
    pub async fn emulate_guest_agents(&self, hanging: &[u32]) {
        self.emulate_guest_agents_with(hanging, None).await;
    }

    /// [`Self::emulate_guest_agents`], with `docker` commands run for real against the engine at
    /// `docker_host` (`unix:///...`, a [`crate::docker::Dockerd`]); without one, VMs have no Docker.
    pub async fn emulate_guest_agents_with(&self, hanging: &[u32], docker_host: Option<&str>) {
        let docker_host = match docker_host {
            Some(host) => format!("{host:?}"),
            None => "None".to_owned(),
        };
        self.exec(
            &GUEST_AGENT
                .replace("HANGING", &format!("{hanging:?}"))
                .replace("DOCKER_ENGINE", &docker_host),
        )
        .await;
    }

    /// Every request fakepve answered: (method, path, body).
    pub async fn requests(&self) -> Vec<(String, String, String)> {
        let rows: Vec<(String, String, String)> = self
            .control
            .get(format!("{}/requests", self.info.control))
            .send()
            .await
            .expect("control endpoint answers")
            .json()
            .await
            .expect("JSON");
        rows
    }

    /// Every request that changed something, as `METHOD path`, leaving out logins.
    pub async fn writes(&self) -> Vec<String> {
        self.requests()
            .await
            .into_iter()
            .filter(|(method, path, _)| method != "GET" && !path.ends_with("/access/ticket"))
            .map(|(method, path, _)| format!("{method} {path}"))
            .collect()
    }

    /// `program` (a `phoenix` binary) pointed at this fake with its API token and CA file, printing plainly
    /// for a wide terminal, with nothing on standard input.
    pub fn phoenix(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command
            .env("PHOENIX_PVE_URL", &self.info.url)
            .env("PHOENIX_PVE_TOKEN_ID", &self.info.token_id)
            .env("PHOENIX_PVE_TOKEN_SECRET", &self.info.token_secret)
            .env("PHOENIX_PVE_CA_FILE", &self.info.cafile)
            .env("NO_COLOR", "1")
            .env("COLUMNS", "400")
            .stdin(Stdio::null());
        command
    }

    /// [`FakePve::phoenix`] on the configuration directory `dir`, keeping its state (the run lock's
    /// files) under `dir/state`.
    pub fn phoenix_on(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        dir: &std::path::Path,
    ) -> std::process::Command {
        let mut command = self.phoenix(program);
        command
            .arg("-c")
            .arg(dir)
            .env("XDG_STATE_HOME", dir.join("state"));
        command
    }

    /// Settings with the API token, trusting the fake's certificate by its CA file.
    pub fn token_settings(&self) -> Settings {
        self.settings(
            Auth::Token {
                id: self.info.token_id.clone(),
                secret: SecretString::new(self.info.token_secret.clone()),
            },
            TlsTrust::CaFile(self.info.cafile.clone().into()),
        )
    }

    /// A client logged in as root@pam with its password, trusting the fake's certificate: bind mounts of
    /// host paths are root's alone, in Proxmox as in fakepve.
    pub async fn root_client(&self) -> Arc<Client> {
        let auth = Auth::Ticket {
            user: self.info.user.clone(),
            password: SecretString::new(self.info.password.clone()),
        };
        let settings = self.settings(auth, TlsTrust::CaFile(self.info.cafile.clone().into()));
        Arc::new(Client::connect(settings).await.expect("connects"))
    }

    /// Settings with given credentials and trust.
    pub fn settings(&self, auth: Auth, tls: TlsTrust) -> Settings {
        Settings {
            endpoint: self.info.url.clone(),
            auth,
            tls,
            request_timeout: Duration::from_secs(20),
            task_timeout: Duration::from_secs(30),
            retry: RetryPolicy {
                attempts: 4,
                initial_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(200),
            },
            lock_timeout: Duration::from_secs(20),
            contact_timeout: Duration::from_secs(3),
        }
    }
}

/// A guest kit on fakepve's node `pve1`, for building one manager.
pub fn kit(client: &Arc<Client>, kind: GuestType) -> GuestKit {
    phoenix_pve::Session::new(Arc::clone(client), "pve1", None, ".").kit(kind)
}
