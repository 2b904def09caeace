"""State for `/nodes/{node}/apt/repositories`, which fakepve validates but answers with a sample.

Each node starts as a fresh Proxmox VE 9 install: Debian's repositories, and the enterprise repositories of
Proxmox VE and Ceph turned on, each in a deb822 `.sources` file. The behaviour follows proxmox-apt as the
API exposes it (pve-manager's PVE/API2/APT.pm):

- GET lists the files with their repositories, and `standard-repos`: every standard repository by handle,
  with `status` true when an enabled entry of the files is that repository, false when only disabled
  ones are, and no status when none is.
- PUT `handle` turns a standard repository on: an entry that is that repository is enabled, else one is
  added, to `proxmox.sources` (Proxmox VE) or `ceph.sources` (Ceph).
- POST `path`, `index`, `enabled` turns one entry on or off.
- Both take the `digest` of the GET they follow, and refuse to write when the files changed since.

`install(pve)` serves these paths through host_state.serve, after fakepve's schema checks.
"""

import copy
import hashlib
import json

from host_state import die, param_error, serve

SUITE = 'trixie'
CEPH = 'ceph-squid'
KEYRING = '/usr/share/keyrings/proxmox-archive-keyring.gpg'

# handle -> (name, host and path of the URI, component)
STANDARD = {
    'enterprise': ('Enterprise', 'enterprise.proxmox.com/debian/pve', 'pve-enterprise'),
    'no-subscription': ('No-Subscription', 'download.proxmox.com/debian/pve', 'pve-no-subscription'),
    'test': ('Test', 'download.proxmox.com/debian/pve', 'pve-test'),
    CEPH + '-enterprise': ('Ceph Squid Enterprise', 'enterprise.proxmox.com/debian/' + CEPH, 'enterprise'),
    CEPH + '-no-subscription': ('Ceph Squid No-Subscription', 'download.proxmox.com/debian/' + CEPH,
                                'no-subscription'),
    CEPH + '-test': ('Ceph Squid Test', 'download.proxmox.com/debian/' + CEPH, 'test'),
}


def _entry(uri, suites, components, keyring, enabled=True):
    return {'Types': ['deb'], 'URIs': [uri], 'Suites': suites, 'Components': components,
            'Options': [{'Key': 'Signed-By', 'Values': [keyring]}], 'Enabled': enabled, 'FileType': 'sources'}


def _fresh():
    debian = '/usr/share/keyrings/debian-archive-keyring.gpg'
    return {
        '/etc/apt/sources.list.d/debian.sources': [
            _entry('http://deb.debian.org/debian/', [SUITE, SUITE + '-updates'],
                   ['main', 'contrib', 'non-free-firmware'], debian),
            _entry('http://security.debian.org/debian-security/', [SUITE + '-security'],
                   ['main', 'contrib', 'non-free-firmware'], debian),
        ],
        '/etc/apt/sources.list.d/pve-enterprise.sources': [
            _entry('https://enterprise.proxmox.com/debian/pve', [SUITE], ['pve-enterprise'], KEYRING)],
        '/etc/apt/sources.list.d/ceph.sources': [
            _entry('https://enterprise.proxmox.com/debian/' + CEPH, [SUITE], ['enterprise'], KEYRING)],
    }


def _is(repository, handle):
    """Whether an entry is the standard repository `handle` (its URI, whatever the scheme, and component)."""
    _, where, component = STANDARD[handle]
    uris = [uri.split('://', 1)[-1].rstrip('/') for uri in repository['URIs']]
    return where in uris and component in repository['Components'] and SUITE in repository['Suites']


class AptState(object):
    def __init__(self):
        self.files = {}
        self.routes = {
            ('GET', '/nodes/{node}/apt/repositories'): self.index,
            ('PUT', '/nodes/{node}/apt/repositories'): self.add,
            ('POST', '/nodes/{node}/apt/repositories'): self.change,
        }

    def _files(self, node):
        return self.files.setdefault(node, _fresh())

    @staticmethod
    def _file_digest(repositories):
        return hashlib.sha256(json.dumps(repositories, sort_keys=True).encode()).digest()

    def _digest(self, node):
        return hashlib.sha256(json.dumps(self._files(node), sort_keys=True).encode()).hexdigest()

    def _check_digest(self, node, v):
        if v.get('digest') and v['digest'] != self._digest(node):
            raise die('detected modified configuration - file changed by other user? Try again.')

    async def index(self, request, v, user):
        files = self._files(v['node'])
        standard = []
        for handle, (name, _, _) in STANDARD.items():
            item = {'handle': handle, 'name': name}
            found = [repo for repos in files.values() for repo in repos if _is(repo, handle)]
            if found:
                item['status'] = any(repo['Enabled'] for repo in found)
            standard.append(item)
        return {
            'files': [{'path': path, 'file-type': 'sources', 'repositories': copy.deepcopy(repos),
                       'digest': list(self._file_digest(repos))} for path, repos in sorted(files.items())],
            'errors': [],
            'infos': [],
            'standard-repos': standard,
            'digest': self._digest(v['node']),
        }

    async def add(self, request, v, user):
        node, handle = v['node'], v['handle']
        if handle not in STANDARD:
            raise param_error(handle='unknown repository handle: {0}'.format(handle))
        self._check_digest(node, v)
        files = self._files(node)
        for repos in files.values():
            for repo in repos:
                if _is(repo, handle):
                    repo['Enabled'] = True
                    return None
        _, where, component = STANDARD[handle]
        scheme = 'https://' if where.startswith('enterprise.') else 'http://'
        path = '/etc/apt/sources.list.d/{0}.sources'.format('ceph' if handle.startswith('ceph-') else 'proxmox')
        files.setdefault(path, []).append(_entry(scheme + where, [SUITE], [component], KEYRING))
        return None

    async def change(self, request, v, user):
        node = v['node']
        self._check_digest(node, v)
        repos = self._files(node).get(v['path'])
        if repos is None:
            raise die("unable to parse file {0} - No such file or directory".format(v['path']))
        index = int(v['index'])
        if not 0 <= index < len(repos):
            raise die('index {0} out of bounds'.format(index))
        if 'enabled' in v:
            repos[index]['Enabled'] = bool(int(v['enabled'])) if not isinstance(v['enabled'], bool) \
                else v['enabled']
        return None


def install(pve):
    """Give pve the APT repository state: returns it, also kept as `pve.apt_state`."""
    state = AptState()
    serve(pve, state.routes)
    pve.apt_state = state
    return state
