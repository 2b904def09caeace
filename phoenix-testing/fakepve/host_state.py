"""State for the host endpoints fakepve accepts but does not keep: a node's DNS, time zone and network, and
access management (users, groups, roles, ACLs, API tokens).

`install(pve)` is called by harness.py before the fake starts. It wraps `pve.answer`, the method through which
fakepve checks every request against the PVE schema (parameters, then permissions) before it synthesises an
answer: for the paths below, the checked values go to a handler here instead of to the synthesiser. A request
the schema rejects never reaches these handlers, so fakepve's validation is kept whole. The behaviour follows
pve-manager (PVE/API2/Network.pm, Nodes.pm) and pve-access-control (PVE/API2/User.pm, Group.pm, Role.pm,
ACL.pm): see README.md for what is modelled and where it is an approximation.
"""

import copy
import datetime
import difflib
import json
import re
import time
import uuid
import zoneinfo

from aiohttp import web

from fakepve import shapes
from fakepve.model import PveError
from fakepve.server import GENERIC

# The `changes` attribute of a network listing, kept on the request until the answer is written.
CHANGES = web.RequestKey('phoenix_changes', str) if hasattr(web, 'RequestKey') else 'phoenix_changes'
REALMS = ('pam', 'pve')


def _privs_with(*prefixes, extra=()):
    return tuple(p for p in shapes.PRIVILEGES if p.startswith(prefixes)) + tuple(extra)


# fakepve knows three built-in roles; a node has these too (pve-access-control's PVE::AccessControl). Their
# privilege lists are close to Proxmox's, not exact: nothing here depends on a built-in role's privileges.
BUILTIN_ROLES = dict(shapes.ROLES, **{
    'PVEAdmin': tuple(p for p in shapes.PRIVILEGES if p not in ('Permissions.Modify', 'Realm.Allocate',
                                                                'Sys.Modify')),
    'PVEDatastoreAdmin': _privs_with('Datastore.'),
    'PVEDatastoreUser': ('Datastore.AllocateSpace', 'Datastore.Audit'),
    'PVEMappingAdmin': _privs_with('Mapping.'),
    'PVEMappingUser': ('Mapping.Audit', 'Mapping.Use'),
    'PVEPoolAdmin': ('Pool.Allocate', 'Pool.Audit'),
    'PVEPoolUser': ('Pool.Audit',),
    'PVESDNAdmin': _privs_with('SDN.'),
    'PVESDNUser': ('SDN.Audit', 'SDN.Use'),
    'PVESysAdmin': ('Permissions.Modify', 'Sys.Audit', 'Sys.Console', 'Sys.Syslog', 'Sys.PowerMgmt'),
    'PVETemplateUser': ('VM.Audit', 'VM.Clone'),
    'PVEUserAdmin': ('User.Modify', 'Group.Allocate', 'Realm.AllocateUser'),
    'PVEVMAdmin': _privs_with('VM.'),
    'PVEVMUser': ('VM.Audit', 'VM.Backup', 'VM.Config.CDROM', 'VM.Config.Cloudinit', 'VM.Console',
                  'VM.GuestAgent.Audit', 'VM.PowerMgmt'),
})


def param_error(**fields):
    """PVE's raise_param_exc: 400 with a message per parameter."""
    return PveError(400, 'Parameter verification failed.', fields)


def die(message):
    """A `die "...\\n"` in an API handler: 500 with the message."""
    return PveError(500, message)


def split_list(text):
    """PVE::Tools::split_list."""
    return [item for item in re.split(r'[\s,;]+', str(text or '')) if item]


def _known(text, known, message):
    """The set of a list's items, or a die naming the first one not in `known`."""
    items = split_list(text)
    for item in items:
        if item not in known:
            raise die(message.format(item))
    return set(items)


class HostState(object):
    """The state of the host endpoints, and their handlers by (method, schema path template)."""

    def __init__(self, pve):
        self.pve = pve
        self.dns = {}
        self.timezone = {}
        self.network = {}
        self.users = {'root@pam': {'enable': 1, 'expire': 0, 'groups': set()}}
        self.groups = {}
        self.roles = {}
        # (path, type, ugid, roleid) -> propagate
        self.acl = {}
        # full token id -> {'privsep', 'expire', 'comment'}; existence is pve.apitokens
        self.tokens = {}
        self.routes = {
            ('GET', '/nodes/{node}/dns'): self.dns_get,
            ('PUT', '/nodes/{node}/dns'): self.dns_put,
            ('GET', '/nodes/{node}/time'): self.time_get,
            ('PUT', '/nodes/{node}/time'): self.time_put,
            ('GET', '/nodes/{node}/network'): self.net_index,
            ('POST', '/nodes/{node}/network'): self.net_create,
            ('PUT', '/nodes/{node}/network'): self.net_reload,
            ('DELETE', '/nodes/{node}/network'): self.net_revert,
            ('GET', '/nodes/{node}/network/{iface}'): self.net_read,
            ('PUT', '/nodes/{node}/network/{iface}'): self.net_update,
            ('DELETE', '/nodes/{node}/network/{iface}'): self.net_delete,
            ('GET', '/access/users'): self.user_index,
            ('POST', '/access/users'): self.user_create,
            ('GET', '/access/users/{userid}'): self.user_read,
            ('PUT', '/access/users/{userid}'): self.user_update,
            ('DELETE', '/access/users/{userid}'): self.user_delete,
            ('GET', '/access/groups'): self.group_index,
            ('POST', '/access/groups'): self.group_create,
            ('GET', '/access/groups/{groupid}'): self.group_read,
            ('PUT', '/access/groups/{groupid}'): self.group_update,
            ('DELETE', '/access/groups/{groupid}'): self.group_delete,
            ('GET', '/access/roles'): self.role_index,
            ('POST', '/access/roles'): self.role_create,
            ('GET', '/access/roles/{roleid}'): self.role_read,
            ('PUT', '/access/roles/{roleid}'): self.role_update,
            ('DELETE', '/access/roles/{roleid}'): self.role_delete,
            ('GET', '/access/acl'): self.acl_read,
            ('PUT', '/access/acl'): self.acl_update,
            ('GET', '/access/users/{userid}/token'): self.token_index,
            ('GET', '/access/users/{userid}/token/{tokenid}'): self.token_read,
            ('POST', '/access/users/{userid}/token/{tokenid}'): self.token_create,
            ('PUT', '/access/users/{userid}/token/{tokenid}'): self.token_update,
            ('DELETE', '/access/users/{userid}/token/{tokenid}'): self.token_delete,
        }

    # -------------------------------------------------------------------- DNS

    def _resolv(self, node):
        # fakepve's own sample answer is the node's initial resolv.conf.
        return self.dns.setdefault(node, {'search': 'example.org', 'dns1': '192.0.2.53'})

    async def dns_get(self, request, v, user):
        return dict(self._resolv(v['node']))

    async def dns_put(self, request, v, user):
        # update_etc_resolv_conf: the parameters are the whole new file; a repeated or 0.0.0.0 server is
        # written once or not at all, and reading numbers the servers in the order written.
        servers = []
        for key in ('dns1', 'dns2', 'dns3'):
            server = v.get(key)
            if server and server != '0.0.0.0' and server not in servers:
                servers.append(server)
        resolv = {'search': v['search']} if v.get('search') else {}
        resolv.update(('dns{0}'.format(n), server) for n, server in enumerate(servers, 1))
        self.dns[v['node']] = resolv

    # ------------------------------------------------------------------- time

    async def time_get(self, request, v, user):
        name = self.timezone.get(v['node'], 'UTC')
        now = int(time.time())
        offset = zoneinfo.ZoneInfo(name).utcoffset(datetime.datetime.fromtimestamp(now))
        return {'timezone': name, 'time': now, 'localtime': now + int(offset.total_seconds())}

    async def time_put(self, request, v, user):
        # Nodes.pm: `-f /usr/share/zoneinfo/$timezone` or "No such timezone".
        name = v['timezone']
        try:
            if '..' in name or name.startswith('/'):
                raise ValueError(name)
            zoneinfo.ZoneInfo(name)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise param_error(timezone='No such timezone') from None
        self.timezone[v['node']] = name

    # ---------------------------------------------------------------- network

    def _net(self, node):
        # Active is /etc/network/interfaces; pending is interfaces.new, None when there is none.
        state = self.network.get(node)
        if state is None:
            active = {}
            for entry in shapes.networks({}):
                entry = dict(entry)
                active[entry.pop('iface')] = entry
            state = self.network[node] = {'active': active, 'pending': None}
        return state

    def _config(self, node):
        state = self._net(node)
        return state['pending'] if state['pending'] is not None else state['active']

    def _writable(self, node):
        state = self._net(node)
        if state['pending'] is None:
            state['pending'] = copy.deepcopy(state['active'])
        return state['pending']

    @staticmethod
    def _render(config):
        """The config as an interfaces file, for the `changes` diff."""
        lines = []
        for name in sorted(config):
            conf = config[name]
            if conf.get('autostart'):
                lines.append('auto {0}'.format(name))
            lines.append('iface {0} inet {1}'.format(name, conf.get('method', 'manual')))
            for key in sorted(conf):
                if key in ('type', 'method', 'method6', 'families', 'priority', 'active', 'exists', 'autostart',
                           'address', 'netmask'):
                    continue
                lines.append('\t{0} {1}'.format('address' if key == 'cidr' else key.replace('_', '-'), conf[key]))
            lines.append('')
        return lines

    def _changes(self, node):
        state = self._net(node)
        if state['pending'] is None:
            return None
        diff = difflib.unified_diff(self._render(state['active']), self._render(state['pending']),
                                    '/etc/network/interfaces', '/etc/network/interfaces.new', lineterm='')
        text = '\n'.join(diff)
        return text + '\n' if text else None

    def _shown(self, node, name, conf):
        """One interface as Proxmox reads it back: `active` if it is up, `exists` if it is a real device."""
        out = dict(conf)
        active = self._net(node)['active'].get(name)
        if active is not None and active.get('active'):
            out['active'] = 1
        else:
            out.pop('active', None)
        return out

    async def net_index(self, request, v, user):
        node = v['node']
        config = self._config(node)
        wanted = v.get('type')
        out = []
        for name in sorted(config):
            kind = config[name].get('type')
            if wanted == 'any_bridge' or wanted == 'any_local_bridge':
                if kind not in ('bridge', 'OVSBridge'):
                    continue
            elif wanted not in (None, 'include_sdn') and kind != wanted:
                continue
            out.append(dict(self._shown(node, name, config[name]), iface=name))
        changes = self._changes(node)
        if changes:
            request[CHANGES] = changes
        return out

    async def net_read(self, request, v, user):
        conf = self._config(v['node']).get(v['iface'])
        if conf is None:
            raise param_error(iface='interface does not exist')
        return self._shown(v['node'], v['iface'], conf)

    @staticmethod
    def _apply(conf, v, deletes=()):
        """Lay the parameters over an interface's config, as Network.pm's create and update do."""
        for key in deletes:
            if key in ('cidr', 'address', 'netmask'):
                for gone in ('cidr', 'address', 'netmask', 'gateway'):
                    conf.pop(gone, None)
            elif key in ('cidr6', 'address6', 'netmask6'):
                for gone in ('cidr6', 'address6', 'netmask6', 'gateway6'):
                    conf.pop(gone, None)
            else:
                conf.pop(key, None)
        skip = ('node', 'iface', 'delete', 'digest', 'address', 'netmask', 'cidr', 'address6', 'netmask6', 'cidr6')
        for key, value in v.items():
            if key not in skip and value is not None:
                conf[key] = value
        cidr = v.get('cidr') or (v.get('address') and v.get('netmask')
                                 and '{0}/{1}'.format(v['address'], _prefix(v['netmask'])))
        if cidr:
            conf['cidr'] = cidr
            conf['address'], conf['netmask'] = cidr.split('/')
        elif v.get('address'):
            conf['address'] = v['address']
        cidr6 = v.get('cidr6') or (v.get('address6') and v.get('netmask6') is not None
                                   and '{0}/{1}'.format(v['address6'], v['netmask6']))
        if cidr6:
            conf['cidr6'] = cidr6
            conf['address6'], netmask6 = cidr6.split('/')
            conf['netmask6'] = int(netmask6)
        conf['method'] = 'static' if conf.get('address') else 'manual'
        conf['method6'] = 'static' if conf.get('cidr6') else 'manual'
        conf['families'] = ['inet'] + (['inet6'] if conf.get('cidr6') else [])
        if conf.get('type') == 'bridge':
            # The interfaces writer adds these to every bridge.
            conf.setdefault('bridge_stp', 'off')
            conf.setdefault('bridge_fd', '0')
        return conf

    @staticmethod
    def _check_duplicate_ports(config, iface, v):
        """Network.pm's check_duplicate_ports: a port belongs to one bridge or bond."""
        keys = ('bridge_ports', 'ovs_ports', 'slaves', 'ovs_bonds')
        wanted = [p for k in keys for p in split_list(v.get(k))]
        name = next((k for k in keys if v.get(k)), None)
        for other, conf in config.items():
            if other == iface:
                continue
            for port in (p for k in keys for p in split_list(conf.get(k))):
                if port in wanted:
                    raise param_error(**{name: "{0} is already used on interface '{1}'.".format(port, other)})

    @staticmethod
    def _check_written(config):
        """What INotify's interfaces writer dies on before it writes anything: a bridge port that is no
        interface of the node (neither configured nor a device the kernel has)."""
        for name in sorted(config):
            conf = config[name]
            if conf.get('type') != 'bridge':
                continue
            for port in split_list(conf.get('bridge_ports')):
                if port != 'none' and port not in config:
                    raise die("bridge '{0}' - unable to find bridge port '{1}'\n".format(name, port))

    def _write(self, node, change):
        """Changes a copy of the pending config and keeps it only if the writer accepts it, as
        write_file('interfaces') writes all or nothing."""
        state = self._net(node)
        config = copy.deepcopy(self._config(node))
        change(config)
        self._check_written(config)
        state['pending'] = config

    async def net_create(self, request, v, user):
        node = v['node']
        config = self._config(node)
        if v['iface'] in config:
            raise param_error(iface='interface already exists')
        self._check_duplicate_ports(config, v['iface'], v)
        last = max([conf.get('priority', 0) for conf in config.values()] + [0])
        self._write(node, lambda config: config.__setitem__(v['iface'], self._apply({'priority': last + 1}, v)))

    async def net_update(self, request, v, user):
        node = v['node']
        config = self._config(node)
        if v['iface'] not in config:
            raise param_error(iface='interface does not exist')
        self._check_duplicate_ports(config, v['iface'], v)
        self._write(node, lambda config: self._apply(config[v['iface']], v, split_list(v.get('delete'))))

    async def net_delete(self, request, v, user):
        node = v['node']
        if v['iface'] not in self._config(node):
            raise param_error(iface='interface does not exist')
        del self._writable(node)[v['iface']]

    async def net_reload(self, request, v, user):
        node = v['node']
        state = self._net(node)

        async def body():
            # ifreload -a: interfaces.new becomes interfaces, and what it declares comes up.
            if state['pending'] is not None:
                state['active'], state['pending'] = state['pending'], None
            for conf in state['active'].values():
                conf['active'] = 1
        return await self.pve.task(node, 'srvreload', 'networking', user or 'root@pam', body)

    async def net_revert(self, request, v, user):
        self._net(v['node'])['pending'] = None

    # ------------------------------------------------------------------ users

    def _user(self, userid, action):
        if userid not in self.users:
            raise die("{0}no such user ('{1}')".format(action, userid))
        return self.users[userid]

    def _groups_of(self, text, action):
        return _known(text, self.groups, action + "no such group '{0}'")

    def _user_tokens(self, userid):
        prefix = userid + '!'
        return dict((full[len(prefix):], self.tokens.get(full, {'privsep': 1}))
                    for full in sorted(self.pve.apitokens) if full.startswith(prefix))

    @staticmethod
    def _user_fields(entry):
        return dict((k, entry[k]) for k in ('enable', 'expire', 'firstname', 'lastname', 'email', 'comment', 'keys')
                    if entry.get(k) is not None)

    async def user_index(self, request, v, user):
        out = []
        for userid in sorted(self.users):
            entry = self.users[userid]
            if v.get('enabled') is not None and int(entry.get('enable', 1)) != int(v['enabled']):
                continue
            item = dict(self._user_fields(entry), userid=userid, **{'realm-type': userid.rpartition('@')[2]})
            if v.get('full'):
                if entry['groups']:
                    item['groups'] = ','.join(sorted(entry['groups']))
                item['tokens'] = [dict(info, tokenid=tid) for tid, info in sorted(self._user_tokens(userid).items())]
            out.append(item)
        return out

    async def user_create(self, request, v, user):
        action = 'create user failed: '
        userid = v['userid']
        if userid in self.users:
            raise die("{0}user '{1}' already exists".format(action, userid))
        realm = userid.rpartition('@')[2]
        if realm not in REALMS:
            raise die("{0}domain '{1}' does not exist".format(action, realm))
        entry = {'enable': 1 if v.get('enable') is None else int(v['enable']), 'expire': int(v.get('expire') or 0),
                 'groups': self._groups_of(v.get('groups'), action)}
        for key in ('firstname', 'lastname', 'email', 'comment', 'keys'):
            if v.get(key):
                entry[key] = v[key]
        self.users[userid] = entry
        if v.get('password') is not None and realm == 'pve':
            self.pve.users[userid] = v['password']

    async def user_read(self, request, v, user):
        entry = self._user(v['userid'], '')
        return dict(self._user_fields(entry), groups=sorted(entry['groups']), tokens=self._user_tokens(v['userid']))

    async def user_update(self, request, v, user):
        action = 'update user failed: '
        entry = self._user(v['userid'], action)
        if v.get('groups') is not None:
            groups = self._groups_of(v['groups'], action)
            entry['groups'] = entry['groups'] | groups if v.get('append') else groups
        elif v.get('append'):
            raise param_error(append="missing property required by 'append'")
        for key in ('enable', 'expire'):
            if v.get(key) is not None:
                entry[key] = int(v[key])
        for key in ('firstname', 'lastname', 'email', 'comment', 'keys'):
            if v.get(key) is not None:
                entry[key] = v[key]

    async def user_delete(self, request, v, user):
        userid = v['userid']
        self._user(userid, 'delete user failed: ')
        del self.users[userid]
        self.pve.users.pop(userid, None)
        for full in [t for t in self.pve.apitokens if t.startswith(userid + '!')]:
            del self.pve.apitokens[full]
            self.tokens.pop(full, None)
        self._drop_acl(lambda kind, ugid: ugid == userid or (kind == 'token' and ugid.startswith(userid + '!')))

    # ----------------------------------------------------------------- groups

    def _members(self, groupid):
        return sorted(u for u, entry in self.users.items() if groupid in entry['groups'])

    async def group_index(self, request, v, user):
        out = []
        for groupid in sorted(self.groups):
            item = {'groupid': groupid}
            if self.groups[groupid].get('comment'):
                item['comment'] = self.groups[groupid]['comment']
            if self._members(groupid):
                item['users'] = ','.join(self._members(groupid))
            out.append(item)
        return out

    async def group_create(self, request, v, user):
        if v['groupid'] in self.groups:
            raise die("create group failed: group '{0}' already exists".format(v['groupid']))
        self.groups[v['groupid']] = {'comment': v.get('comment')}

    def _group(self, groupid, action):
        if groupid not in self.groups:
            raise die("{0}group '{1}' does not exist".format(action, groupid))
        return self.groups[groupid]

    async def group_read(self, request, v, user):
        entry = self._group(v['groupid'], '')
        out = {'members': self._members(v['groupid'])}
        if entry.get('comment'):
            out['comment'] = entry['comment']
        return out

    async def group_update(self, request, v, user):
        entry = self._group(v['groupid'], 'update group failed: ')
        if v.get('comment') is not None:
            entry['comment'] = v['comment']

    async def group_delete(self, request, v, user):
        groupid = v['groupid']
        self._group(groupid, 'delete group failed: ')
        del self.groups[groupid]
        for entry in self.users.values():
            entry['groups'].discard(groupid)
        self._drop_acl(lambda kind, ugid: kind == 'group' and ugid == groupid)

    # ------------------------------------------------------------------ roles

    def _privs(self, text, action):
        return _known(text, shapes.PRIVILEGES, action + "invalid privilege '{0}'")

    def _role_privs(self, roleid):
        if roleid in BUILTIN_ROLES:
            return set(BUILTIN_ROLES[roleid])
        return self.roles.get(roleid)

    async def role_index(self, request, v, user):
        names = sorted(set(BUILTIN_ROLES) | set(self.roles))
        return [{'roleid': name, 'privs': ','.join(sorted(self._role_privs(name))),
                 'special': 1 if name in BUILTIN_ROLES else 0} for name in names]

    async def role_create(self, request, v, user):
        action = 'create role failed: '
        if self._role_privs(v['roleid']) is not None:
            raise die("{0}role '{1}' already exists".format(action, v['roleid']))
        self.roles[v['roleid']] = self._privs(v.get('privs'), action)

    async def role_read(self, request, v, user):
        privs = self._role_privs(v['roleid'])
        if privs is None:
            raise die("role '{0}' does not exist".format(v['roleid']))
        return dict.fromkeys(sorted(privs), 1)

    def _custom_role(self, roleid, action, verb):
        if roleid in BUILTIN_ROLES:
            raise die("{0}auto-generated role '{1}' cannot be {2}".format(action, roleid, verb))
        if roleid not in self.roles:
            raise die("{0}role '{1}' does not exist".format(action, roleid))

    async def role_update(self, request, v, user):
        action = 'update role failed: '
        self._custom_role(v['roleid'], action, 'modified')
        privs = self._privs(v.get('privs'), action)
        self.roles[v['roleid']] = self.roles[v['roleid']] | privs if v.get('append') else privs

    async def role_delete(self, request, v, user):
        self._custom_role(v['roleid'], 'delete role failed: ', 'deleted')
        del self.roles[v['roleid']]
        self._drop_acl(lambda kind, ugid: False, role=v['roleid'])

    # -------------------------------------------------------------------- ACL

    def _drop_acl(self, gone, role=None):
        for key in list(self.acl):
            path, kind, ugid, roleid = key
            if gone(kind, ugid) or roleid == role:
                del self.acl[key]

    async def acl_read(self, request, v, user):
        order = {'user': 0, 'group': 1, 'token': 2}
        keys = sorted(self.acl, key=lambda k: (k[0], order[k[1]], k[2], k[3]))
        return [{'path': key[0], 'type': key[1], 'ugid': key[2], 'roleid': key[3], 'propagate': self.acl[key]}
                for key in keys]

    async def acl_update(self, request, v, user):
        action = 'ACL update failed: '
        path = '/' + '/'.join(seg for seg in v['path'].split('/') if seg)
        if not _acl_path(path):
            raise param_error(path="invalid ACL path '{0}'".format(v['path']))
        roles = split_list(v['roles'])
        for roleid in roles:
            if self._role_privs(roleid) is None:
                raise die("{0}role '{1}' does not exist".format(action, roleid))
        who = []
        for group in split_list(v.get('groups')):
            if group not in self.groups:
                raise die("{0}group '{1}' does not exist".format(action, group))
            who.append(('group', group))
        for userid in split_list(v.get('users')):
            if userid not in self.users:
                raise die("{0}user '{1}' does not exist".format(action, userid))
            who.append(('user', userid))
        for full in split_list(v.get('tokens')):
            if full not in self.pve.apitokens:
                userid, _, tokenid = full.partition('!')
                raise die("{0}no such token '{1}' for user '{2}'".format(action, tokenid, userid))
            who.append(('token', full))
        propagate = 1 if v.get('propagate') is None else int(v['propagate'])
        for kind, ugid in who:
            for roleid in roles:
                if v.get('delete'):
                    self.acl.pop((path, kind, ugid, roleid), None)
                else:
                    self.acl[path, kind, ugid, roleid] = propagate

    # ----------------------------------------------------------------- tokens

    def _token(self, userid, tokenid):
        _check_tokenid(tokenid)
        full = '{0}!{1}'.format(userid, tokenid)
        if full not in self.pve.apitokens:
            raise die("no such token '{0}' for user '{1}'".format(tokenid, userid))
        return full

    async def token_index(self, request, v, user):
        self._user(v['userid'], '')
        return [dict(info, tokenid=tid) for tid, info in sorted(self._user_tokens(v['userid']).items())]

    async def token_read(self, request, v, user):
        self._user(v['userid'], '')
        full = self._token(v['userid'], v['tokenid'])
        return dict(self.tokens.get(full, {'privsep': 1}))

    async def token_create(self, request, v, user):
        _check_tokenid(v['tokenid'])
        self._user(v['userid'], '')
        full = '{0}!{1}'.format(v['userid'], v['tokenid'])
        if full in self.pve.apitokens:
            raise die('Token already exists.')
        info = {'privsep': 1 if v.get('privsep') is None else int(v['privsep'])}
        if v.get('expire') is not None:
            info['expire'] = int(v['expire'])
        if v.get('comment'):
            info['comment'] = v['comment']
        value = str(uuid.uuid4())
        self.pve.apitokens[full] = value
        self.tokens[full] = info
        return {'full-tokenid': full, 'info': dict(info), 'value': value}

    async def token_update(self, request, v, user):
        self._user(v['userid'], '')
        full = self._token(v['userid'], v['tokenid'])
        info = self.tokens.setdefault(full, {'privsep': 1})
        for key in split_list(v.get('delete')):
            info.pop(key, None)
        for key in ('privsep', 'expire'):
            if v.get(key) is not None:
                info[key] = int(v[key])
        if v.get('comment') is not None:
            info['comment'] = v['comment']
        return dict(info)

    async def token_delete(self, request, v, user):
        self._user(v['userid'], '')
        full = self._token(v['userid'], v['tokenid'])
        del self.pve.apitokens[full]
        self.tokens.pop(full, None)
        self._drop_acl(lambda kind, ugid: kind == 'token' and ugid == full)


# The schema's tokenid pattern is Perl's `(?^:...)`, which fakepve cannot compile and so does not check.
TOKENID = re.compile(r'[A-Za-z][A-Za-z0-9.\-_]+\Z')


def _check_tokenid(tokenid):
    if not TOKENID.match(tokenid):
        raise param_error(tokenid='value does not match the regex pattern')


def _prefix(netmask):
    """A netmask as a prefix length: '255.255.255.0' or '24' -> 24."""
    text = str(netmask)
    if '.' not in text:
        return int(text)
    return sum(bin(int(part)).count('1') for part in text.split('.'))


# PVE::AccessControl::check_path: the paths an ACL can name.
ACL_PATHS = [re.compile(p + r'\Z') for p in (
    r'/', r'/access', r'/access/groups', r'/access/groups/[^/]+', r'/access/realm', r'/access/realm/[^/]+',
    r'/cluster', r'/cluster/ha', r'/cluster/ha/[^/]+', r'/mapping', r'/mapping/[^/]+', r'/mapping/[^/]+/[^/]+',
    r'/nodes', r'/nodes/[^/]+', r'/pool', r'/pool/[^/]+(?:/[^/]+){0,2}', r'/sdn', r'/sdn/[^/]+(?:/[^/]+){0,3}',
    r'/storage', r'/storage/[^/]+', r'/vms', r'/vms/\d+')]


def _acl_path(path):
    return any(pattern.match(path) for pattern in ACL_PATHS)


def serve(pve, routes):
    """Hand the requests for `routes` ((method, schema path template) -> handler) to their handlers, once
    fakepve has checked them against the schema."""
    original_answer = pve.answer

    async def answer(request, match, params, user, call=None):
        handler = routes.get((request.method, match.template)) if match is not None else None
        if call is None and handler is not None:
            async def call(_match, values):
                return await handler(request, values, user)
        return await original_answer(request, match, params, user, call)
    pve.answer = answer


def install(pve):
    """Give pve the host state: returns the HostState, also kept as `pve.host_state`."""
    state = HostState(pve)
    serve(pve, state.routes)

    original_generic = pve._generic

    async def generic(request):
        response = await original_generic(request)
        changes = request.get(CHANGES)
        if changes is None or request[GENERIC] is None:
            return response
        # Network.pm sets the result attribute `changes`: it travels beside `data`.
        body = json.loads(response.text)
        body['changes'] = changes
        return web.json_response(body)
    # Looked up when the app is built, so this must run before pve.start().
    pve._generic = generic
    pve.host_state = state
    return state
