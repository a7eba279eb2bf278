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

"""Quiescing through the guest agent, and the snapshot's flags."""

from unittest import mock

import ddt
import libvirt
import libvirt_qemu
import testtools

from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import errors

_DISKS = ("<disk type='file' device='disk'><source file='/v/a'/>"
          "<target dev='vda'/></disk>"
          "<disk type='file' device='disk'><source file='/v/b'/>"
          "<target dev='vdb'/></disk>")
_AGENT = ("<channel type='unix'><target type='virtio' "
          "name='org.qemu.guest_agent.0'%s/></channel>")
_OTHER = ("<channel type='unix'><target type='virtio' "
          "name='org.example.other' state='connected'/></channel>")
BASE = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | (
    libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
    | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
QUIESCE = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE


def _xml(channels=''):
    return "<domain><devices>%s%s</devices></domain>" % (_DISKS, channels)


def _domain(xml_text):
    domain = mock.create_autospec(libvirt.virDomain, instance=True)
    domain.XMLDesc.return_value = xml_text
    domain.name.return_value = 'instance-0001'
    return domain


@ddt.ddt
class AgentTestCase(testtools.TestCase):

    @ddt.data(('', None),
              (_OTHER, None),
              (_AGENT % " state='disconnected'", 'disconnected'),
              (_AGENT % " state='connected'", 'connected'),
              (_AGENT % '', ''))
    @ddt.unpack
    def test_channel_state(self, channels, expected):
        self.assertEqual(expected,
                         domains.agent_channel_state(_xml(channels)))

    @mock.patch.object(libvirt_qemu, 'qemuAgentCommand', autospec=True)
    def test_no_channel_or_disconnected_is_not_pinged(self, command):
        for channels, why in (('', 'no guest agent channel'),
                              (_AGENT % " state='disconnected'",
                               'no guest agent is connected')):
            answers, reason = domains.agent_answers(_domain(_xml(channels)))
            self.assertFalse(answers)
            self.assertIn(why, reason)
        command.assert_not_called()

    @mock.patch.object(libvirt_qemu, 'qemuAgentCommand', autospec=True)
    def test_connected_agent_is_pinged(self, command):
        domain = _domain(_xml(_AGENT % " state='connected'"))
        self.assertEqual((True, None), domains.agent_answers(domain, 3))
        command.assert_called_once_with(domain, '{"execute": "guest-ping"}',
                                        3, 0)
        command.side_effect = libvirt.libvirtError('Guest agent is not '
                                                   'responding')
        answers, reason = domains.agent_answers(domain)
        self.assertFalse(answers)
        self.assertIn('does not answer: Guest agent is not responding',
                      reason)


@mock.patch.object(domains, 'agent_answers', autospec=True)
class SnapshotFlagsTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.domain = _domain(_xml())
        self.overlays = {'vda': '/v/a.overlay'}

    def _flags(self):
        return [c[0][1] for c in self.domain.snapshotCreateXML.call_args_list]

    def test_quiesced_when_the_agent_answers(self, answers):
        answers.return_value = (True, None)
        snapshot = domains.snapshot_disks(self.domain, self.overlays)
        self.assertEqual([BASE | QUIESCE], self._flags())
        self.assertTrue(snapshot.quiesced)
        self.assertGreaterEqual(snapshot.seconds, 0.0)
        xml_text = self.domain.snapshotCreateXML.call_args[0][0]
        self.assertIn("<disk name=\"vda\" snapshot=\"external\">", xml_text)
        self.assertIn("<disk name=\"vdb\" snapshot=\"no\" />", xml_text)

    def test_crash_consistent_without_an_agent(self, answers):
        answers.return_value = (False, 'no guest agent channel')
        with self.assertLogs(domains.LOG.logger, 'WARNING') as logs:
            snapshot = domains.snapshot_disks(self.domain, self.overlays)
        self.assertEqual([BASE], self._flags())
        self.assertFalse(snapshot.quiesced)
        self.assertEqual('no guest agent channel', snapshot.why_not_quiesced)
        self.assertIn('crash-consistent', logs.output[0])

    def test_failed_quiesce_falls_back_to_crash_consistent(self, answers):
        answers.return_value = (True, None)
        self.domain.snapshotCreateXML.side_effect = [
            libvirt.libvirtError('fs-freeze failed'), None]
        snapshot = domains.snapshot_disks(self.domain, self.overlays)
        self.assertEqual([BASE | QUIESCE, BASE], self._flags())
        self.assertFalse(snapshot.quiesced)
        self.assertIn('fs-freeze failed', snapshot.why_not_quiesced)

    def test_not_asked_to_quiesce(self, answers):
        snapshot = domains.snapshot_disks(self.domain, self.overlays,
                                          quiesce=False)
        answers.assert_not_called()
        self.assertEqual([BASE], self._flags())
        self.assertFalse(snapshot.quiesced)

    def test_failed_snapshot_raises(self, answers):
        answers.return_value = (False, 'no agent')
        self.domain.snapshotCreateXML.side_effect = libvirt.libvirtError(
            'no space')
        exc = self.assertRaises(errors.DomainError, domains.snapshot_disks,
                                self.domain, self.overlays)
        self.assertIn('vda', str(exc))
        self.assertIn('no space', str(exc))


class PowerStateTestCase(testtools.TestCase):

    def test_power_state(self):
        domain = _domain(_xml())
        domain.isActive.return_value = 1
        self.assertEqual('running', domains.power_state(domain))
        domain.isActive.return_value = 0
        self.assertEqual('shutoff', domains.power_state(domain))
