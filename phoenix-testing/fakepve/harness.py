"""Serve fakepve for Phoenix's integration tests, with a control endpoint for the test to drive it.

Prints one JSON line on stdout once listening:
  {"url", "control", "cafile", "fingerprint", "token_id", "token_secret", "user", "password"}
The control endpoint (plain HTTP on loopback) takes POST /exec with {"code": "..."}: the code runs as the
body of an async function with `pve` (the FakePve) in scope and may `await`; whatever it assigns to
`result` is returned as JSON. GET /requests returns every request fakepve answered: [method, path, body].
The host endpoints fakepve answers without keeping state get it from host_state.py (`pve.host_state`);
cluster_state.py migrates VMs and lets a test set node memory.
"""

import argparse
import asyncio
import hashlib
import json
import secrets
import sys
import tempfile
import textwrap

from aiohttp import web

from fakepve import FakePve
from fakepve.certs import make_cert

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import apt_state  # noqa: E402 - after the line above
import cluster_state  # noqa: E402
import host_state  # noqa: E402

HOST = '127.0.0.1'


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--time-scale', type=float, default=0.0)
    args = parser.parse_args()

    pve = FakePve(user='root@pam', password='secret', host=HOST, port=0)
    pve.time_scale = args.time_scale
    token_id = 'root@pam!phoenix'
    token_secret = secrets.token_hex(16)
    pve.apitokens[token_id] = token_secret
    # DNS, time, network and access management keep what is written (see host_state.py and README.md).
    host_state.install(pve)
    # APT repositories keep what is written (see apt_state.py).
    apt_state.install(pve)
    # VMs migrate, and node memory can be set (see cluster_state.py).
    cluster_state.install(pve)

    directory = tempfile.mkdtemp(prefix='phoenix-fakepve-')
    certfile, keyfile, der = make_cert(directory, hosts=(HOST,))
    await pve.start(certfile, keyfile)

    async def run(request):
        body = await request.json()
        source = 'async def __phoenix_exec(pve):\n    result = None\n{0}\n    return result\n'.format(
            textwrap.indent(body['code'], '    '))
        scope = {'asyncio': asyncio}
        try:
            exec(compile(source, '<control>', 'exec'), scope)
            result = await scope['__phoenix_exec'](pve)
        except Exception as error:  # noqa: BLE001 - reported to the test
            return web.json_response({'error': '{0}: {1}'.format(type(error).__name__, error)}, status=500)
        return web.json_response({'result': result}, dumps=lambda value: json.dumps(value, default=repr))

    async def requests(_request):
        rows = [[method, path, body.decode('utf-8', 'replace') if isinstance(body, bytes) else str(body)]
                for method, path, body in pve.requests]
        return web.json_response(rows)

    app = web.Application()
    app.router.add_post('/exec', run)
    app.router.add_get('/requests', requests)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    control_port = runner.addresses[0][1]

    print(json.dumps({
        'url': pve.url,
        'control': 'http://{0}:{1}'.format(HOST, control_port),
        'cafile': certfile,
        'fingerprint': ':'.join('{0:02X}'.format(b) for b in hashlib.sha256(der).digest()),
        'token_id': token_id,
        'token_secret': token_secret,
        'user': 'root@pam',
        'password': 'secret',
    }), flush=True)
    # Serve until the test closes our stdin (or kills us).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == '__main__':
    asyncio.run(main())
