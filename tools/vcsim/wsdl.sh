#!/usr/bin/env bash
# Print the path of a vimService.wsdl that oslo.vmware can load for vcsim.
#
#   bash tools/vcsim/wsdl.sh [PYTHON]
#
# vcsim serves no WSDL. gen_wsdl.py writes the method part (vim.wsdl,
# vim-messagetypes.xsd, vimService.wsdl) from the vim25 Go bindings of the
# govmomi build (build.sh keeps them) and copies the data type schemas that
# oslo.vmware ships next to it. PYTHON is an interpreter that can import
# oslo_vmware (default: $CVB_VENV/bin/python, then the source tree's .venv,
# then python3). The result is cached beside the vcsim binary.
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${1:-}
if [ -z "$python" ]; then
    for candidate in "${CVB_VENV:-}/bin/python" "$here/../../.venv/bin/python" \
                     python3; do
        if "$candidate" -c 'import oslo_vmware' 2>/dev/null; then
            python=$candidate
            break
        fi
    done
fi
[ -n "$python" ] || { echo "wsdl.sh: no python with oslo_vmware" >&2; exit 1; }

binary=$(bash "$here/build.sh" | tail -n1)
xsd_dir=$("$python" - <<'PY'
import os
import oslo_vmware
base = os.path.join(os.path.dirname(oslo_vmware.__file__), 'wsdl')
versions = [v for v in os.listdir(base)
            if os.path.exists(os.path.join(base, v, 'vim-types.xsd'))]
versions.sort(key=lambda v: tuple(int(p) for p in v.split('.')))
print(os.path.join(base, versions[-1]))
PY
)
key=$( (cat "$here/gen_wsdl.py"; cat "$xsd_dir"/*.xsd) | sha256sum | cut -c1-16)
out=$(dirname "$binary")/wsdl-$key
if [ ! -f "$out/vimService.wsdl" ]; then
    exec 9>"$out.lock"
    flock 9
fi
if [ ! -f "$out/vimService.wsdl" ]; then
    rm -rf "$out.tmp"
    "$python" "$here/gen_wsdl.py" "$(dirname "$binary")/vim25" "$xsd_dir" \
        "$out.tmp" >/dev/null
    rm -rf "$out"
    mv "$out.tmp" "$out"
fi
echo "$out/vimService.wsdl"
