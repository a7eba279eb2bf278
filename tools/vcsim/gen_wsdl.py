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

"""Generate the vSphere WSDL that vcsim does not serve.

vcsim answers SOAP but serves no WSDL, and oslo.vmware ships the vSphere
*data type* schemas only (``oslo_vmware/wsdl/<version>/vim-types.xsd``,
``core-types.xsd``, ``query-types.xsd``, ``reflect-types.xsd``), not the
method part (``vim-messagetypes.xsd``, ``vim.wsdl``, ``vimService.wsdl``).

This script writes the method part from govmomi's own Go bindings
(``vim25/methods/methods.go`` lists every method with its request and
response element, ``vim25/types/types.go`` has the ``<Method>RequestType``
and ``<Method>Response`` structures with their XML tags), i.e. from the
same source the simulator is built from, so the client and vcsim agree on
every method vcsim knows. The data types are oslo.vmware's own copies of
VMware's schemas, copied next to the generated files. A method whose
request or response refers to a type those schemas lack is left out (and
counted on stderr) so that suds can always load the result.

Usage: gen_wsdl.py VIM25_GO_DIR OSLO_XSD_DIR OUT_DIR
Only the standard library is used (it runs before the project's venv is).
"""

import os
import re
import shutil
import sys
from xml.sax import saxutils

_BODY_RE = re.compile(
    r'^type (\w+)Body struct \{\n'
    r'\s+Req\s+\*types\.(\w+)\s+`xml:"urn:vim25 (\w+),omitempty"`\n'
    r'\s+Res\s+\*types\.(\w+)\s+`xml:"(\w+),omitempty"`', re.M)
_STRUCT_RE = re.compile(r'^type (\w+) struct \{\n(.*?)^\}', re.M | re.S)
_ALIAS_RE = re.compile(r'^type (\w+) (\w+)RequestType$', re.M)
_FIELD_RE = re.compile(r'^\s+(\w+)\s+(\S+)\s+`xml:"([^"]*)"`\s*$')
_XSD_NAME_RE = re.compile(r'<(?:complexType|simpleType) name="(\w+)"')

_PRIMITIVES = {
    'string': 'xsd:string', 'bool': 'xsd:boolean', 'int8': 'xsd:byte',
    'int16': 'xsd:short', 'int32': 'xsd:int', 'int64': 'xsd:long',
    'float32': 'xsd:float', 'float64': 'xsd:double',
    'time.Time': 'xsd:dateTime', 'AnyType': 'xsd:anyType',
    'byte': 'xsd:byte',
}

_TYPES_XSD = ('vim-types.xsd', 'core-types.xsd', 'query-types.xsd',
              'reflect-types.xsd')
_SOAP_ACTION = 'urn:vim25/6.5'


class UnknownType(Exception):
    pass


def _xsd_type(go_type, known, extra=None):
    """Map a Go field type to (xsd type, is_list, is_pointer).

    ``extra`` (a callable) is asked to describe a type that the schemas
    lack: it returns whether it could.
    """
    is_list = go_type.startswith('[]')
    if is_list:
        go_type = go_type[2:]
    is_pointer = go_type.startswith('*')
    if is_pointer:
        go_type = go_type[1:]
    if is_list and go_type == 'byte':
        return 'xsd:base64Binary', False, is_pointer
    if go_type in _PRIMITIVES:
        return _PRIMITIVES[go_type], is_list, is_pointer
    if go_type.startswith('types.'):
        go_type = go_type[len('types.'):]
    if go_type not in known and go_type.startswith('Base') \
            and go_type[4:] in known:
        go_type = go_type[4:]
    if go_type not in known and not (extra and extra(go_type)):
        raise UnknownType(go_type)
    return 'vim25:' + go_type, is_list, is_pointer


def _elements(body, known, extra=None):
    """Yield <element> lines for a Go struct body."""
    lines = []
    for line in body.splitlines():
        match = _FIELD_RE.match(line)
        if not match:
            if line.strip():
                raise UnknownType('unparsed field %r' % line.strip())
            continue
        _name, go_type, tag = match.groups()
        parts = tag.split(',')
        xml_name = parts[0]
        optional = 'omitempty' in parts[1:]
        xsd, is_list, is_pointer = _xsd_type(go_type, known, extra)
        attrs = 'name="%s" type="%s"' % (xml_name, xsd)
        if optional or is_pointer:
            attrs += ' minOccurs="0"'
        if is_list:
            attrs += ' maxOccurs="unbounded"'
        lines.append('<element %s />' % attrs)
    return lines


def _extra_go(go_dir):
    """The bindings the patch series adds beside govmomi's generated ones.

    ``cvb_*.go`` files (build.sh copies them next to ``methods.go`` and
    ``types.go``): vSphere's internal methods such as
    AuthorizationManager.DisableMethods, whose data types VMware's public
    schemas do not have either.
    """
    methods_go, types_go = [], []
    for name in sorted(os.listdir(go_dir)):
        if name.startswith('cvb_') and name.endswith('.go'):
            with open(os.path.join(go_dir, name)) as f:
                text = f.read()
            if text.lstrip().startswith('package methods') or \
                    '\npackage methods' in text:
                methods_go.append(text)
            else:
                types_go.append(text)
    return '\n'.join(methods_go), '\n'.join(types_go)


def generate(go_dir, xsd_dir, out_dir):
    with open(os.path.join(go_dir, 'methods.go')) as f:
        methods_go = f.read()
    with open(os.path.join(go_dir, 'types.go')) as f:
        types_go = f.read()
    extra_methods_go, extra_types_go = _extra_go(go_dir)
    methods_go += '\n' + extra_methods_go
    types_go += '\n' + extra_types_go
    structs = dict(_STRUCT_RE.findall(types_go))
    # Data types only the series' bindings define: described in
    # vim-messagetypes.xsd when a method uses them.
    extra_structs = dict(_STRUCT_RE.findall(extra_types_go))
    extra_types = {}
    # `type Foo FooRequestType`: Foo's body is FooRequestType's.
    aliases = dict((name, base + 'RequestType')
                   for name, base in _ALIAS_RE.findall(types_go))
    known = set()
    for name in _TYPES_XSD:
        with open(os.path.join(xsd_dir, name)) as f:
            known.update(_XSD_NAME_RE.findall(f.read()))

    def extra(name):
        if name in extra_types:
            return True
        if name not in extra_structs:
            return False
        extra_types[name] = None  # a recursive reference resolves
        try:
            fields = _elements(extra_structs[name], known, extra)
        except UnknownType:
            del extra_types[name]
            raise
        extra_types[name] = (
            '   <complexType name="%s">\n      <sequence>\n%s'
            '      </sequence>\n   </complexType>\n' % (
                name, ''.join('         %s\n' % e for e in fields)))
        return True

    messagetypes, elements, operations = [], [], []
    skipped = []
    for match in _BODY_RE.finditer(methods_go):
        _body, req_type, op, res_type, res_elem = match.groups()
        req_struct = aliases.get(req_type, req_type + 'RequestType')
        try:
            req_fields = _elements(structs[req_struct], known, extra)
            res_fields = _elements(structs.get(res_type, ''), known, extra)
        except (UnknownType, KeyError) as exc:
            skipped.append('%s (%s)' % (op, exc))
            continue
        messagetypes.append(
            '   <complexType name="%s">\n      <sequence>\n%s'
            '      </sequence>\n   </complexType>\n' % (
                req_struct, ''.join('         %s\n' % e
                                    for e in req_fields)))
        elements.append(
            '         <element name="%s" type="vim25:%s" />\n'
            '         <element name="%s">\n            <complexType>\n'
            '               <sequence>\n%s               </sequence>\n'
            '            </complexType>\n         </element>\n' % (
                op, req_struct, res_elem,
                ''.join('                  %s\n' % e for e in res_fields)))
        operations.append(op)

    os.makedirs(out_dir, exist_ok=True)
    for name in _TYPES_XSD:
        shutil.copyfile(os.path.join(xsd_dir, name),
                        os.path.join(out_dir, name))
    _write(out_dir, 'vim-messagetypes.xsd', _MESSAGETYPES % ''.join(
        [extra_types[name] for name in sorted(extra_types)] + messagetypes))
    messages = ''.join(
        '   <message name="%(op)sRequestMsg">\n'
        '      <part name="parameters" element="vim25:%(op)s" />\n'
        '   </message>\n'
        '   <message name="%(op)sResponseMsg">\n'
        '      <part name="parameters" element="vim25:%(res)s" />\n'
        '   </message>\n' % {'op': op, 'res': op + 'Response'}
        for op in operations)
    port_ops = ''.join(
        '      <operation name="%(op)s">\n'
        '         <input message="vim25:%(op)sRequestMsg" />\n'
        '         <output message="vim25:%(op)sResponseMsg" />\n'
        '      </operation>\n' % {'op': op} for op in operations)
    binding_ops = ''.join(
        '      <operation name="%s">\n'
        '         <soap:operation soapAction=%s />\n'
        '         <input><soap:body use="literal" /></input>\n'
        '         <output><soap:body use="literal" /></output>\n'
        '      </operation>\n' % (op, saxutils.quoteattr(_SOAP_ACTION))
        for op in operations)
    _write(out_dir, 'vim.wsdl', _VIM_WSDL % {
        'elements': ''.join(elements), 'messages': messages,
        'port_ops': port_ops, 'binding_ops': binding_ops})
    _write(out_dir, 'vimService.wsdl', _SERVICE_WSDL)
    sys.stderr.write('gen_wsdl: %d methods, %d left out: %s\n' % (
        len(operations), len(skipped), ', '.join(skipped) or '-'))
    return os.path.join(out_dir, 'vimService.wsdl')


def _write(out_dir, name, text):
    path = os.path.join(out_dir, name)
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)


_MESSAGETYPES = '''<?xml version="1.0" encoding="UTF-8" ?>
<!-- Generated by cinder-vmdk-backup tools/vcsim/gen_wsdl.py from govmomi's
     vim25 Go bindings. -->
<schema
   targetNamespace="urn:vim25"
   xmlns="http://www.w3.org/2001/XMLSchema"
   xmlns:vim25="urn:vim25"
   xmlns:xsd="http://www.w3.org/2001/XMLSchema"
   elementFormDefault="qualified"
>
   <include schemaLocation="vim-types.xsd" />
%s</schema>
'''

_VIM_WSDL = '''<?xml version="1.0" encoding="UTF-8" ?>
<!-- Generated by cinder-vmdk-backup tools/vcsim/gen_wsdl.py from govmomi's
     vim25 Go bindings. -->
<definitions targetNamespace="urn:vim25"
   xmlns="http://schemas.xmlsoap.org/wsdl/"
   xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
   xmlns:vim25="urn:vim25"
   xmlns:xsd="http://www.w3.org/2001/XMLSchema"
>
   <types>
      <schema
         targetNamespace="urn:vim25"
         xmlns="http://www.w3.org/2001/XMLSchema"
         xmlns:vim25="urn:vim25"
         xmlns:xsd="http://www.w3.org/2001/XMLSchema"
         elementFormDefault="qualified"
      >
         <include schemaLocation="vim-messagetypes.xsd" />
%(elements)s      </schema>
   </types>
%(messages)s   <portType name="VimPortType">
%(port_ops)s   </portType>
   <binding name="VimBinding" type="vim25:VimPortType">
      <soap:binding style="document"
         transport="http://schemas.xmlsoap.org/soap/http" />
%(binding_ops)s   </binding>
</definitions>
'''

_SERVICE_WSDL = '''<?xml version="1.0" encoding="UTF-8" ?>
<!-- Generated by cinder-vmdk-backup tools/vcsim/gen_wsdl.py. -->
<definitions targetNamespace="urn:vim25Service"
   xmlns="http://schemas.xmlsoap.org/wsdl/"
   xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
   xmlns:interface="urn:vim25"
>
   <import location="vim.wsdl" namespace="urn:vim25" />
   <service name="VimService">
      <port binding="interface:VimBinding" name="VimPort">
         <soap:address location="https://localhost/sdk/vimService" />
      </port>
   </service>
</definitions>
'''


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    print(generate(*argv))
    return 0


if __name__ == '__main__':
    sys.exit(main())
