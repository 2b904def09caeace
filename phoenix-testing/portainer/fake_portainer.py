"""A stateful fake of the Portainer API endpoints Phoenix uses, behind Prism, which validates every request
against Portainer's own OpenAPI description.

One process serves many tests: each tenant (a fresh Portainer) has its own front port. A request to a
front port is forwarded through Prism (`prism proxy SPEC http://127.0.0.1:UPSTREAM`) to this process's
upstream port, tagged with its tenant; what Prism said about the request (its `sl-violations` header) is
recorded with it. Response violations are Prism's opinion of this fake, not of Phoenix, and are kept apart.

Control (never through Prism), on the control port:
  POST /tenant                   a new tenant: {"front": port, "id": n}; body {"api_keys": [...], "jwt_ttl": s}
  GET  /tenant/N/requests        every request of tenant N: method, path, query, body, violations
  GET  /tenant/N/state           its endpoints and stacks
  POST /tenant/N/stack/ID/file   replaces a stack's compose file, as an edit in Portainer's UI would
  Git stacks are read from local repositories (a path or file:// URL) with the real `git`.
  POST /tenant/N/down            answers 503 to everything from now on; /tenant/N/up undoes it

The process prints one JSON line {"control": port} when ready, starts Prism as its child, and exits (with
Prism) when its parent goes away.
"""

import email.parser
import email.policy
import http.client
import http.server
import itertools
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse

LOCK = threading.RLock()
TENANTS = {}
PRISM_PORT = None


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tenant:
    def __init__(self, number, api_keys, jwt_ttl):
        self.id = number
        self.api_keys = set(api_keys)
        self.jwt_ttl = jwt_ttl
        self.admin = None
        self.tokens = {}
        self.endpoints = []
        self.stacks = []
        self.next_id = 1
        self.requests = []
        self.request_numbers = itertools.count(1)
        self.down = False
        self.front = None

    def new_id(self):
        number = self.next_id
        self.next_id += 1
        return number


class Threading(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def reply(handler, status, body=None, headers=()):
    data = b"" if body is None else json.dumps(body).encode()
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    if body is not None:
        handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def error(handler, status, message, details=""):
    reply(handler, status, {"message": message, "details": details or message})


def read_body(handler):
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class Front(http.server.BaseHTTPRequestHandler):
    """Forwards to Prism, records what it said about the request."""

    tenant = None

    def log_message(self, *args):
        pass

    def forward(self):
        body = read_body(self)
        connection = http.client.HTTPConnection("127.0.0.1", PRISM_PORT, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        headers["X-Fake-Tenant"] = str(self.tenant.id)
        with LOCK:
            number = next(self.tenant.request_numbers)
        headers["X-Fake-Request"] = str(number)
        connection.request(self.command, self.path, body=body or None, headers=headers)
        response = connection.getresponse()
        data = response.read()
        violations = json.loads(response.getheader("sl-violations") or "[]")
        with LOCK:
            recorded = next((r for r in self.tenant.requests if r.get("number") == number), None)
            request_violations = [v for v in violations if v.get("location", [""])[0] == "request"]
            if recorded is None:
                # Prism answered itself (the request never reached the fake).
                recorded = {"method": self.command, "path": self.path.split("?")[0], "status": response.status}
                self.tenant.requests.append(recorded)
            recorded["violations"] = request_violations
            recorded["response_violations"] = [v for v in violations if v not in request_violations]
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() in ("content-length", "transfer-encoding", "connection", "keep-alive"):
                continue
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = forward


def multipart_fields(content_type, body):
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields = {}
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = part.get_payload(decode=True).decode()
    return fields


def truthy(value):
    return str(value).lower() in ("1", "true")


def endpoint_view(endpoint):
    return dict(endpoint)


class Upstream(http.server.BaseHTTPRequestHandler):
    """The fake Portainer, reached through Prism."""

    def log_message(self, *args):
        pass

    def handle_any(self):
        tenant = TENANTS.get(int(self.headers.get("X-Fake-Tenant") or 0))
        if tenant is None:
            return error(self, 400, "no tenant")
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = read_body(self)
        content_type = self.headers.get("Content-Type") or ""
        with LOCK:
            record = {
                "method": self.command,
                "path": url.path,
                "query": query,
                "content_type": content_type.split(";")[0],
                "number": int(self.headers.get("X-Fake-Request") or 0),
            }
            if body and content_type.startswith("application/json"):
                try:
                    record["body"] = json.loads(body)
                except ValueError:
                    record["body"] = body.decode(errors="replace")
            elif body and content_type.startswith("multipart/form-data"):
                record["body"] = multipart_fields(content_type, body)
            tenant.requests.append(record)
            if tenant.down:
                record["status"] = 503
                return error(self, 503, "Portainer is down")
            status = self.route(tenant, url.path, query, body, content_type)
            record["status"] = status

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

    def authorised(self, tenant):
        key = self.headers.get("X-API-Key")
        if key is not None:
            return key in tenant.api_keys
        bearer = self.headers.get("Authorization") or ""
        if bearer.startswith("Bearer "):
            expiry = tenant.tokens.get(bearer[len("Bearer "):])
            return expiry is not None and expiry > time.time()
        return False

    def route(self, tenant, path, query, body, content_type):
        method = self.command
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["api"]:
            error(self, 404, "Not found")
            return 404
        parts = parts[1:]
        if parts == ["system", "status"] and method == "GET":
            reply(self, 200, {"Version": "2.33.6", "InstanceID": "fake-%d" % tenant.id})
            return 200
        if parts == ["users", "admin", "check"] and method == "GET":
            status = 204 if tenant.admin else 404
            if status == 204:
                reply(self, 204)
            else:
                error(self, 404, "Administrator not found")
            return status
        if parts == ["users", "admin", "init"] and method == "POST":
            payload = lower_keys(json.loads(body or b"{}"))
            if tenant.admin:
                error(self, 409, "An administrator user already exists")
                return 409
            if not payload.get("username") or len(payload.get("password") or "") < 12:
                error(self, 400, "Invalid request payload", "password too short")
                return 400
            tenant.admin = (payload["username"], payload["password"])
            reply(self, 200, {"Id": 1, "Username": payload["username"], "Role": 1})
            return 200
        if parts == ["auth"] and method == "POST":
            payload = lower_keys(json.loads(body or b"{}"))
            if not tenant.admin or (payload.get("username"), payload.get("password")) != tenant.admin:
                error(self, 422, "Invalid credentials")
                return 422
            token = "jwt-%d-%d" % (tenant.id, tenant.new_id())
            tenant.tokens[token] = time.time() + tenant.jwt_ttl
            reply(self, 200, {"jwt": token})
            return 200
        if not self.authorised(tenant):
            error(self, 401, "Unauthorized", "A valid authorisation token is missing")
            return 401
        if parts == ["endpoints"]:
            if method == "GET":
                reply(self, 200, [endpoint_view(e) for e in tenant.endpoints])
                return 200
            if method == "POST":
                if not content_type.startswith("multipart/form-data"):
                    error(self, 400, "Invalid request payload", "request body is not multipart form data")
                    return 400
                fields = multipart_fields(content_type, body) or {}
                name = fields.get("Name")
                kind = int(fields.get("EndpointCreationType") or 0)
                if not name or kind not in (1, 2):
                    error(self, 400, "Invalid request payload", "Name and EndpointCreationType 1 or 2")
                    return 400
                if any(e["Name"] == name for e in tenant.endpoints):
                    error(self, 409, "Name is not unique")
                    return 409
                url = fields.get("URL") or ("unix:///var/run/docker.sock" if kind == 1 else "")
                if kind == 2 and not (url.startswith("tcp://") and truthy(fields.get("TLS"))):
                    error(self, 400, "Invalid request payload", "an agent needs a tcp:// URL and TLS")
                    return 400
                endpoint = {
                    "Id": tenant.new_id(),
                    "Name": name,
                    "Type": kind,
                    "URL": url,
                    "PublicURL": fields.get("PublicURL", ""),
                    "GroupId": int(fields.get("GroupID") or 1),
                    "Status": 1,
                    "TLSConfig": {
                        "TLS": truthy(fields.get("TLS")),
                        "TLSSkipVerify": truthy(fields.get("TLSSkipVerify")),
                    },
                }
                tenant.endpoints.append(endpoint)
                reply(self, 200, endpoint_view(endpoint))
                return 200
        if len(parts) == 2 and parts[0] == "endpoints":
            endpoint = next((e for e in tenant.endpoints if str(e["Id"]) == parts[1]), None)
            if endpoint is None:
                error(self, 404, "Unable to find an environment with the specified identifier inside the database")
                return 404
            if method == "GET":
                reply(self, 200, endpoint_view(endpoint))
                return 200
            if method == "PUT":
                payload = json.loads(body or b"{}")
                for key in ("Name", "URL", "PublicURL"):
                    if key in payload:
                        endpoint[key] = payload[key]
                for key in ("TLS", "TLSSkipVerify"):
                    if key in payload:
                        endpoint["TLSConfig"][key] = bool(payload[key])
                reply(self, 200, endpoint_view(endpoint))
                return 200
            if method == "DELETE":
                tenant.endpoints.remove(endpoint)
                reply(self, 204)
                return 204
        if parts == ["stacks"] and method == "GET":
            filters = json.loads(query.get("filters") or "{}")
            stacks = [
                stack_view(s)
                for s in tenant.stacks
                if "EndpointID" not in filters or s["EndpointId"] == filters["EndpointID"]
            ]
            reply(self, 200, stacks)
            return 200
        if parts[:3] == ["stacks", "create", "standalone"] and parts[3:] in (["string"], ["repository"]) and method == "POST":
            endpoint_id = int(query.get("endpointId") or 0)
            if not any(e["Id"] == endpoint_id for e in tenant.endpoints):
                error(self, 404, "Unable to find an environment with the specified identifier inside the database")
                return 404
            payload = lower_keys(json.loads(body or b"{}"))
            name = payload.get("name") or ""
            from_git = parts[3] == "repository"
            source = payload.get("repositoryurl" if from_git else "stackfilecontent") or ""
            if not name or not source.strip():
                wanted = "RepositoryURL" if from_git else "StackFileContent"
                error(self, 400, "Invalid request payload", "Name and %s are required" % wanted)
                return 400
            if any(s["Name"] == name and s["EndpointId"] == endpoint_id for s in tenant.stacks):
                error(self, 409, "A stack with the normalized name '%s' already exists" % name)
                return 409
            stack = {
                "Id": None,
                "Name": name,
                "Type": 2,
                "EndpointId": endpoint_id,
                "Env": payload.get("env") or [],
                "Status": 1,
                "CreationDate": int(time.time()),
                "UpdateDate": 0,
                "content": source,
            }
            if from_git:
                reference = payload.get("repositoryreferencename") or "refs/heads/main"
                compose_file = payload.get("composefile") or "docker-compose.yml"
                cloned = git_checkout(source, reference, compose_file)
                if isinstance(cloned, str):
                    error(self, 500, "Unable to clone git repository", cloned)
                    return 500
                stack["content"], commit = cloned
                stack["GitConfig"] = {
                    "URL": source, "ReferenceName": reference, "ConfigFilePath": compose_file, "ConfigHash": commit,
                }
            stack["Id"] = tenant.new_id()
            tenant.stacks.append(stack)
            reply(self, 200, stack_view(stack))
            return 200
        if len(parts) >= 2 and parts[0] == "stacks":
            stack = next((s for s in tenant.stacks if str(s["Id"]) == parts[1]), None)
            if stack is None:
                error(self, 404, "Unable to find a stack with the specified identifier inside the database")
                return 404
            if parts[2:] == ["file"] and method == "GET":
                reply(self, 200, {"StackFileContent": stack["content"]})
                return 200
            if parts[2:] in (["git"], ["git", "redeploy"]):
                if "GitConfig" not in stack:
                    error(self, 400, "Stack is not created from git")
                    return 400
                if int(query.get("endpointId") or 0) != stack["EndpointId"]:
                    error(self, 400, "Invalid query parameter: endpointId")
                    return 400
                payload = lower_keys(json.loads(body or b"{}"))
                git = stack["GitConfig"]
                if parts[2:] == ["git"] and method == "POST":
                    git["URL"] = payload.get("repositoryurl") or git["URL"]
                    git["ReferenceName"] = payload.get("repositoryreferencename") or git["ReferenceName"]
                    git["ConfigFilePath"] = payload.get("configfilepath") or git["ConfigFilePath"]
                    if payload.get("env") is not None:
                        stack["Env"] = payload["env"]
                    reply(self, 200, stack_view(stack))
                    return 200
                if parts[2:] == ["git", "redeploy"] and method == "PUT":
                    reference = payload.get("repositoryreferencename") or git["ReferenceName"]
                    cloned = git_checkout(git["URL"], reference, git["ConfigFilePath"])
                    if isinstance(cloned, str):
                        error(self, 500, "Unable to clone git repository", cloned)
                        return 500
                    stack["content"], git["ConfigHash"] = cloned
                    git["ReferenceName"] = reference
                    if payload.get("env") is not None:
                        stack["Env"] = payload["env"]
                    stack["UpdateDate"] = int(time.time())
                    reply(self, 200, stack_view(stack))
                    return 200
            if parts[2:]:
                error(self, 404, "Not found")
                return 404
            if method == "GET":
                reply(self, 200, stack_view(stack))
                return 200
            endpoint_id = int(query.get("endpointId") or 0)
            if endpoint_id != stack["EndpointId"]:
                error(self, 400, "Invalid query parameter: endpointId")
                return 400
            if method == "PUT":
                payload = lower_keys(json.loads(body or b"{}"))
                if not (payload.get("stackfilecontent") or "").strip():
                    error(self, 400, "Invalid request payload", "StackFileContent is required")
                    return 400
                stack["content"] = payload["stackfilecontent"]
                stack["Env"] = payload.get("env") or []
                stack["UpdateDate"] = int(time.time())
                reply(self, 200, stack_view(stack))
                return 200
            if method == "DELETE":
                tenant.stacks.remove(stack)
                reply(self, 204)
                return 204
        error(self, 404, "Not found")
        return 404


def git_checkout(url, reference, path):
    """The file at `path` of `reference` in the repository at `url`, and the commit: what Portainer's clone
    reads. A real `git` does the reading; the error text when it cannot."""
    try:
        commit = subprocess.run(
            ["git", "ls-remote", "--exit-code", url, reference],
            capture_output=True, text=True, timeout=60,
        )
        if commit.returncode != 0:
            return "reference %s not found in %s: %s" % (reference, url, commit.stderr.strip())
        sha = commit.stdout.split()[0]
        shown = subprocess.run(
            ["git", "--git-dir", git_dir(url), "show", "%s:%s" % (sha, path)],
            capture_output=True, text=True, timeout=60,
        )
        if shown.returncode != 0:
            return "no %s in %s at %s: %s" % (path, url, reference, shown.stderr.strip())
        return shown.stdout, sha
    except (OSError, subprocess.TimeoutExpired) as failure:
        return str(failure)


def git_dir(url):
    """The Git directory of a local repository (`file://` URL or path, bare or not)."""
    path = url[len("file://"):] if url.startswith("file://") else url
    dotgit = os.path.join(path, ".git")
    return dotgit if os.path.isdir(dotgit) else path


def lower_keys(payload):
    """Portainer matches body keys case-insensitively."""
    return {k.lower(): v for k, v in payload.items()} if isinstance(payload, dict) else {}


def stack_view(stack):
    return {k: v for k, v in stack.items() if k != "content"}


class Control(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        parts = [p for p in self.path.split("/") if p]
        body = read_body(self)
        with LOCK:
            if parts == ["tenant"]:
                options = json.loads(body or b"{}")
                tenant = Tenant(len(TENANTS) + 1, options.get("api_keys", []), options.get("jwt_ttl", 3600))
                TENANTS[tenant.id] = tenant
                handler = type("TenantFront", (Front,), {"tenant": tenant})
                server = Threading(("127.0.0.1", 0), handler)
                tenant.front = server.server_address[1]
                threading.Thread(target=server.serve_forever, daemon=True).start()
                return reply(self, 200, {"id": tenant.id, "front": tenant.front})
            tenant = TENANTS.get(int(parts[1])) if len(parts) > 1 else None
            if tenant is None:
                return error(self, 404, "no such tenant")
            if parts[2:] == ["down"]:
                tenant.down = True
                return reply(self, 200, {})
            if parts[2:] == ["up"]:
                tenant.down = False
                return reply(self, 200, {})
            if len(parts) == 5 and parts[2] == "stack" and parts[4] == "file":
                stack = next((s for s in tenant.stacks if str(s["Id"]) == parts[3]), None)
                if stack is None:
                    return error(self, 404, "no such stack")
                stack["content"] = body.decode()
                return reply(self, 200, {})
        error(self, 404, "no such control")

    def do_GET(self):
        parts = [p for p in self.path.split("/") if p]
        with LOCK:
            tenant = TENANTS.get(int(parts[1])) if len(parts) == 3 else None
            if tenant is None:
                return error(self, 404, "no such tenant")
            if parts[2] == "requests":
                return reply(self, 200, tenant.requests)
            if parts[2] == "state":
                stacks = [dict(s) for s in tenant.stacks]
                return reply(self, 200, {"endpoints": tenant.endpoints, "stacks": stacks, "admin": bool(tenant.admin)})
        error(self, 404, "no such control")


def main():
    global PRISM_PORT
    prism, spec = sys.argv[1], sys.argv[2]
    upstream = Threading(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    PRISM_PORT = free_port()
    log = open(os.environ.get("FAKE_PORTAINER_PRISM_LOG", os.devnull), "w")
    child = subprocess.Popen(
        [prism, "proxy", spec, "http://127.0.0.1:%d" % upstream.server_address[1], "-p", str(PRISM_PORT)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", PRISM_PORT, timeout=5)
            connection.request("GET", "/api/system/status", headers={"X-Fake-Tenant": "0"})
            connection.getresponse().read()
            break
        except OSError:
            if child.poll() is not None or time.time() > deadline:
                print(json.dumps({"error": "Prism did not start"}), flush=True)
                child.kill()
                sys.exit(1)
            time.sleep(0.2)
    control = Threading(("127.0.0.1", 0), Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(json.dumps({"control": control.server_address[1]}), flush=True)
    parent = os.getppid()
    try:
        while os.getppid() == parent and child.poll() is None:
            time.sleep(0.5)
    finally:
        child.kill()


if __name__ == "__main__":
    main()
