# Sourced by the tools: the project's virtualenv, made and filled on demand.
# CVB_VENV overrides its place (default: .venv in the source tree).
VENV=${CVB_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv}

_venv_pip() {
    # pip in the venv, its "WARNING: Location ..." lines left out; the exit
    # status is pip's, with or without pipefail. (A bare `pip | grep -v`
    # fails under pipefail when pip prints nothing at all, which stopped
    # `set -e` callers such as demo.sh.)
    "$VENV/bin/pip" "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
    return "${PIPESTATUS[0]}"
}

ensure_venv() {
    local top stamp want
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    stamp="$VENV/.cvb-requirements"
    want=$(cat "$top/requirements.txt" "$top/test-requirements.txt" \
           "$top/setup.cfg" | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    python3 -m venv "$VENV" || return 1
    # A newer pip is welcome, not needed.
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    _venv_pip install -q -r "$top/requirements.txt" \
        -r "$top/test-requirements.txt" || return 1
    # setuptools warns of every editable install (folders named like the
    # package in the working directory could shadow it): nothing to act on
    # for a virtualenv made for this very tree. Only that warning is
    # silenced; errors and any other warning stay visible.
    PYTHONWARNINGS="ignore:Editable installation::setuptools.command.editable_wheel" \
        _venv_pip install -q -e "$top" || return 1
    # The check's output (eventlet's deprecation banner, printed when
    # Cinder imports it) is shown only when the imports fail.
    local out
    out=$("$VENV/bin/python" -c 'import cinder_vmdk_backup, cinder' 2>&1) \
        || { echo "$out" >&2; return 1; }
    echo "$want" > "$stamp"
}
