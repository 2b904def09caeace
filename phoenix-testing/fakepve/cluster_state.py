"""A cluster of several nodes, where fakepve 0.5.0 falls short of one.

- `POST /nodes/{node}/qemu/{vmid}/migrate`: fakepve checks it against the schema and answers, but moves
  nothing. Here it moves the VM in a `qmigrate` task (fakepve's own `FakePve.migrate`), refusing what
  qemu-server refuses: the local node as target, a node the cluster does not have or that is offline, a
  running VM without `online`, and a live migration of disks on storage that is not shared without
  `with-local-disks`.
- Node memory: every node of fakepve reports 2 of 8 GiB used. `pve.node_memory[name] = (used, total)`
  (bytes) makes `/cluster/resources` and `/nodes` report other figures for that node, so placement by free
  memory can be tested.
"""

import json
import re

from aiohttp import web

from fakepve.model import PveError

DISK = re.compile(r'^(scsi|virtio|sata|ide)\d+$|^efidisk0$|^tpmstate0$')


def local_disks(pve, vm):
    """The volumes of the VM's disks on storage that is not shared."""
    found = []
    for key, value in sorted(vm.config.items()):
        if not DISK.match(key) or 'media=cdrom' in str(value):
            continue
        volume = str(value).split(',')[0]
        storage = volume.split(':')[0]
        if ':' in volume and not pve.storages.get(storage, {}).get('shared'):
            found.append(volume)
    return found


def install(pve):
    """Give pve VM migration and settable node memory."""
    pve.node_memory = {}

    async def migrate(_request, values, user):
        node, vmid, target = values['node'], int(values['vmid']), values['target']
        if target == node:
            raise PveError(400, 'Parameter verification failed.', {'target': 'target is local node.'})
        pve.need_quorum()
        if target not in pve.nodes:
            raise PveError(500, "no such cluster node '{0}'".format(target))
        if not pve.nodes[target].get('online', True):
            raise PveError(500, "target node '{0}' is not online".format(target))
        vm = pve.find(node, vmid)
        online = str(values.get('online', '0')) in ('1', 'true')
        if vm.status == 'running' and not online:
            raise PveError(500, "can't migrate running VM without --online")
        with_local = str(values.get('with-local-disks', '0')) in ('1', 'true')
        if vm.status == 'running' and local_disks(pve, vm) and not with_local:
            raise PveError(500, "can't live migrate attached local disks without with-local-disks option")
        return await pve.migrate(vmid, target, secs=1, user=user)

    original_answer = pve.answer

    async def answer(request, match, params, user, call=None):
        if (call is None and match is not None and request.method == 'POST'
                and match.template == '/nodes/{node}/qemu/{vmid}/migrate'):
            async def call(_match, values):
                return await migrate(request, values, user)
        return await original_answer(request, match, params, user, call)
    pve.answer = answer

    def with_memory(handler):
        async def wrapped(request):
            response = await handler(request)
            if not pve.node_memory or response.status != 200:
                return response
            body = json.loads(response.text)
            for entry in body.get('data') or []:
                figures = pve.node_memory.get(entry.get('node'))
                if entry.get('type') == 'node' and figures and 'maxmem' in entry:
                    entry['mem'], entry['maxmem'] = figures
            return web.json_response(body)
        return wrapped
    # Looked up when the app is built, so this must run before pve.start().
    pve._resources = with_memory(pve._resources)
    pve._nodes = with_memory(pve._nodes)
