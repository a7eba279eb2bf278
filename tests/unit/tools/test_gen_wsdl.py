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

"""tools/vcsim/gen_wsdl.py with the patch series' own bindings.

A stand-in vim25 Go directory (govmomi's generated ``methods.go`` and
``types.go`` plus ``cvb_*.go`` files as build.sh copies them) and stand-in
schemas: the series' methods get into the WSDL with the data types the
schemas lack, and a method whose types nobody defines is still left out.
"""

import importlib.util
import io
import os

import fixtures
from oslotest import base

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
GEN_WSDL = os.path.join(TOP, 'tools', 'vcsim', 'gen_wsdl.py')


def _body(method):
    return _BODY % {'m': method, 'soap': _SOAP}


_BODY = '''type %(m)sBody struct {
    Req    *types.%(m)s         `xml:"urn:vim25 %(m)s,omitempty"`
    Res    *types.%(m)sResponse `xml:"%(m)sResponse,omitempty"`
    Fault_ *soap.Fault `xml:"%(soap)s Fault,omitempty"`
}
'''

_SOAP = 'http://schemas.xmlsoap.org/soap/envelope/'
_LICENSE = '/*\nLicensed under the Apache License, Version 2.0\n*/\n\n'

_TYPES = '''package types

type PowerOnVM_TaskRequestType struct {
    This ManagedObjectReference `xml:"_this"`
}

type PowerOnVM_TaskResponse struct {
    Returnval ManagedObjectReference `xml:"returnval"`
}
'''

_CVB_TYPES = '''package types

type DisabledMethodRequest struct {
    Method   string `xml:"method"`
    ReasonId string `xml:"reasonId,omitempty"`
}

type DisableMethodsRequestType struct {
    This     ManagedObjectReference   `xml:"_this"`
    Entity   []ManagedObjectReference `xml:"entity"`
    Method   []DisabledMethodRequest  `xml:"method,omitempty"`
    SourceId string                   `xml:"sourceId,omitempty"`
}

type DisableMethodsResponse struct {
}

type BrokenRequestType struct {
    This  ManagedObjectReference `xml:"_this"`
    Thing NobodyDefinesThis      `xml:"thing"`
}

type BrokenResponse struct {
}
'''

_XSD = ('<schema><complexType name="ManagedObjectReference">'
        '</complexType></schema>\n')


class GenWsdlTestCase(base.BaseTestCase):

    def setUp(self):
        super(GenWsdlTestCase, self).setUp()
        spec = importlib.util.spec_from_file_location('gen_wsdl', GEN_WSDL)
        self.gen_wsdl = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.gen_wsdl)
        self.useFixture(fixtures.MonkeyPatch('sys.stderr', io.StringIO()))
        tmp = self.useFixture(fixtures.TempDir()).path
        self.go_dir = os.path.join(tmp, 'vim25')
        self.xsd_dir = os.path.join(tmp, 'xsd')
        self.out_dir = os.path.join(tmp, 'out')
        os.mkdir(self.go_dir)
        os.mkdir(self.xsd_dir)
        self._write(self.go_dir, 'methods.go',
                    'package methods\n\n' + _body('PowerOnVM_Task'))
        self._write(self.go_dir, 'types.go', _TYPES)
        for name in self.gen_wsdl._TYPES_XSD:
            self._write(self.xsd_dir, name, _XSD)

    @staticmethod
    def _write(directory, name, text):
        with open(os.path.join(directory, name), 'w') as f:
            f.write(text)

    def _generate(self):
        self.gen_wsdl.generate(self.go_dir, self.xsd_dir, self.out_dir)
        with open(os.path.join(self.out_dir, 'vim.wsdl')) as f:
            wsdl = f.read()
        with open(os.path.join(self.out_dir, 'vim-messagetypes.xsd')) as f:
            messagetypes = f.read()
        return wsdl, messagetypes

    def test_without_the_series_bindings(self):
        wsdl, messagetypes = self._generate()
        self.assertIn('<operation name="PowerOnVM_Task">', wsdl)
        self.assertNotIn('DisableMethods', wsdl)
        self.assertNotIn('DisabledMethodRequest', messagetypes)

    def test_series_methods_and_their_types(self):
        self._write(self.go_dir, 'cvb_internal_methods.go', _LICENSE +
                    'package methods\n\n' + _body('DisableMethods')
                    + _body('Broken'))
        self._write(self.go_dir, 'cvb_internal_types.go',
                    _LICENSE + _CVB_TYPES)
        wsdl, messagetypes = self._generate()
        self.assertIn('<operation name="PowerOnVM_Task">', wsdl)
        self.assertIn('<operation name="DisableMethods">', wsdl)
        self.assertIn('<complexType name="DisabledMethodRequest">',
                      messagetypes)
        self.assertIn('<element name="reasonId" type="xsd:string" '
                      'minOccurs="0" />', messagetypes)
        self.assertIn('<element name="method" '
                      'type="vim25:DisabledMethodRequest" minOccurs="0" '
                      'maxOccurs="unbounded" />', messagetypes)
        # Its data type is defined nowhere: left out, the rest loads.
        self.assertNotIn('Broken', wsdl)
        self.assertNotIn('NobodyDefinesThis', messagetypes)
