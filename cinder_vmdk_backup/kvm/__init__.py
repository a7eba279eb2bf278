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

"""KVM/qcow2 helpers of the qcow2 volume driver.

Small modules with one job each, no Cinder imports: :mod:`.qemu_img` runs
qemu-img, :mod:`.raw_reader` reads a qcow2 image's guest data as a raw
stream without reading holes, :mod:`.offline` freezes and merges an image
nobody runs, :mod:`.domains` finds and drives the libvirt domains that run
an image (external snapshot, active block commit), :mod:`.freezer` puts
both together for a set of images, :mod:`.leftovers` finds and merges what
an interrupted backup left behind, :mod:`.paths` maps the local paths
to the ones domains see (Nova's NFS mount point).
"""
