# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Nova's VMware driver in a process of its own, driven over a pipe.

Runs under Nova's Python (``$CVB_NOVA_VENV/bin/python``, which needs
``oslo.vmware``), not the test's: Nova and Cinder live in separate
virtualenvs. ``python nova_compute.py LOG`` reads one JSON object per
line on stdin and answers each with one JSON line on stdout:

* the first line configures ``[vmware]`` (``host_ip``, ``host_port``,
  ``host_username``, ``host_password``, ``ca_file``, ``cluster_name``,
  ``datastore_regex``) and constructs ``VMwareVCDriver`` (it logs in,
  checks the version, registers its vCenter extension), then calls
  ``init_host``; the answer is ``{"ok": nodename}``;
* then requests ``{"call": NAME, ...}``:

  - ``resource``: ``get_available_resource``;
  - ``inventory`` (``provider_uuid``): the Placement inventory
    ``update_provider_tree`` reports;
  - ``spawn`` (``uuid``, ``name``, optional ``root_connection_info``): a
    server booted from a volume, so without an image (without a root
    volume the VM has no disk), powered on;
  - ``connector`` (``uuid``): ``get_volume_connector``;
  - ``attach_volume``, ``detach_volume`` (``uuid``, ``connection_info``,
    ``mountpoint``);
  - ``power_off``, ``power_on`` (``uuid``);
  - ``destroy`` (``uuid``, the server's volumes as ``spawn`` takes them
    plus ``volumes``: [connection info, mountpoint] pairs): detaches them
    first, as nova-compute does (vSphere's Destroy_Task deletes every
    disk a VM still has);
  - ``instances``: ``list_instance_uuids``.

Each answer is ``{"ok": result}`` or ``{"error": "Type: message",
"trace": ...}``. The password arrives on stdin, never on the command
line; the log (``LOG``, 0600: the driver's logging at DEBUG, suds at
INFO, and the process's stderr) names no secret.
No Nova service, database or message queue runs: the driver's RPC client
gets oslo.messaging's in-memory ``fake`` transport (the driver builds a
compute API client it never calls on these paths).
"""

import json
import logging
import os
import sys
import traceback

_DRIVER = {}


def _configure(config, log_path):
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    handler = logging.StreamHandler(open(fd, 'a'))
    handler.setFormatter(logging.Formatter(
        '%(asctime)s %(levelname)s %(name)s %(message)s'))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    for name in ('suds', 'oslo_vmware.service', 'stevedore'):
        logging.getLogger(name).setLevel(logging.INFO)

    import nova.conf
    import oslo_messaging

    conf = nova.conf.CONF
    conf([], project='nova', default_config_files=[])
    oslo_messaging.get_rpc_transport(conf)  # registers transport_url
    conf.set_override('transport_url', 'fake:/')
    for key in ('host_ip', 'host_port', 'host_username', 'host_password',
                'ca_file', 'cluster_name', 'datastore_regex'):
        conf.set_override(key, config[key], group='vmware')
    conf.set_override('insecure', False, group='vmware')
    conf.set_override('api_retry_count', 1, group='vmware')
    conf.set_override('task_poll_interval', 0.1, group='vmware')
    # After the options: the session's defaults are read at import time.
    from nova import objects
    from nova import rpc
    from nova.virt import virtapi
    from nova.virt.vmwareapi import driver

    objects.register_all()
    rpc.init(conf)
    compute = driver.VMwareVCDriver(virtapi.VirtAPI())
    compute.init_host('compute-1')
    _DRIVER['driver'] = compute
    _DRIVER['node'] = compute.get_available_nodes()[0]
    return _DRIVER['node']


def _context():
    from nova import context
    return context.get_admin_context()


def _instance(uuid, name='cvb-instance'):
    """The Instance object of a server booted from a volume (no image)."""
    from nova import objects

    flavor = objects.Flavor(name='cvb.tiny', flavorid='cvb-tiny',
                            memory_mb=64, vcpus=1, root_gb=0,
                            ephemeral_gb=0, swap=0, extra_specs={})
    return objects.Instance(
        context=_context(), uuid=uuid, image_ref='', flavor=flavor,
        memory_mb=64, vcpus=1, root_gb=0, ephemeral_gb=0,
        display_name=name, project_id='cvb-project', user_id='cvb-user',
        node=_DRIVER['node'], host='compute-1', metadata={},
        system_metadata={}, config_drive='', vm_state='building',
        task_state=None, power_state=0, availability_zone=None,
        key_data=None)


def _block_device_info(request):
    """The server's volumes as nova-compute passes them (or None).

    ``root_connection_info``: the boot volume (boot index 0, /dev/sda);
    ``volumes``: [connection_info, mountpoint] of the others.
    """
    mapping = []
    if request.get('root_connection_info'):
        mapping.append({'connection_info': request['root_connection_info'],
                        'boot_index': 0, 'mount_device': '/dev/sda',
                        'disk_bus': None, 'delete_on_termination': False})
    for connection_info, mountpoint in request.get('volumes', ()):
        mapping.append({'connection_info': connection_info,
                        'boot_index': None, 'mount_device': mountpoint,
                        'disk_bus': None, 'delete_on_termination': False})
    if not mapping:
        return None
    return {'root_device_name': '/dev/sda', 'ephemerals': [], 'swap': None,
            'block_device_mapping': mapping}


def _call(request):
    from nova import objects

    compute = _DRIVER['driver']
    name = request['call']
    if name == 'resource':
        return compute.get_available_resource(_DRIVER['node'])
    if name == 'inventory':
        from nova.compute import provider_tree
        tree = provider_tree.ProviderTree()
        tree.new_root(_DRIVER['node'], request['provider_uuid'])
        compute.update_provider_tree(tree, _DRIVER['node'])
        return tree.data(_DRIVER['node']).inventory
    if name == 'instances':
        return compute.list_instance_uuids()
    instance = _instance(request['uuid'], request.get('name', 'cvb'))
    if name == 'spawn':
        image = objects.ImageMeta.from_dict({})
        compute.spawn(_context(), instance, image, [], None, [],
                      block_device_info=_block_device_info(request))
        return compute.get_info(instance).state
    if name == 'connector':
        return compute.get_volume_connector(instance)
    if name == 'attach_volume':
        return compute.attach_volume(
            _context(), request['connection_info'], instance,
            request['mountpoint'])
    if name == 'detach_volume':
        return compute.detach_volume(
            _context(), request['connection_info'], instance,
            request['mountpoint'])
    if name == 'power_off':
        return compute.power_off(instance)
    if name == 'power_on':
        return compute.power_on(_context(), instance, [])
    if name == 'destroy':
        return compute.destroy(_context(), instance, [],
                               block_device_info=_block_device_info(request))
    raise ValueError('unknown call %r' % name)


def _answer(result):
    sys.stdout.write(json.dumps(result, default=str) + '\n')
    sys.stdout.flush()


def main():
    log_path = sys.argv[1]
    first = True
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if first:
                first = False
                result = _configure(request, log_path)
            else:
                result = _call(request)
        except Exception as exc:
            logging.getLogger(__name__).exception('%s failed', request.get(
                'call', 'configure'))
            _answer({'error': '%s: %s' % (type(exc).__name__, exc),
                     'trace': traceback.format_exc(limit=-4)})
            continue
        _answer({'ok': result})


if __name__ == '__main__':
    main()
