# Sourced by tools/deploy/*.sh: paths, and how daemons are started, found
# and stopped (by the PID recorded when they were started, never by name).
#
# Environment (all optional):
#   CVB_DEPLOY_DIR  where the deployment keeps its state (default
#                   /var/tmp/cvb-deploy); one deployment per directory
#   CVB_VENV        the virtualenv with Cinder and the plugin (see
#                   tools/lib/venv.sh; default .venv in the source tree)
#   CVB_OSC_VENV    the OpenStack client's virtualenv
#                   (default /opt/cvb-openstackclient)
#   CVB_KEYSTONE_VENV  Keystone's virtualenv (default /opt/cvb-keystone)
#   CVB_NOVA_VENV   Nova's and Placement's virtualenv (default /opt/cvb-nova)
#   CVB_NEUTRON_VENV  Neutron's virtualenv (default /opt/cvb-neutron)
#   CVB_DEPLOY_NOVA 1: the kvm or plugin profile runs Nova too (nova.sh)
#   CVB_VCSIM       a vcsim binary (default: what tools/vcsim/build.sh builds)
#   CVB_VCSIM_WSDL  the vSphere WSDL file (default: tools/vcsim/wsdl.sh says)

CVB_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$CVB_TOP/tools/lib/venv.sh"
CVB_DEPLOY_DIR=${CVB_DEPLOY_DIR:-/var/tmp/cvb-deploy}
CVB_OSC_VENV=${CVB_OSC_VENV:-/opt/cvb-openstackclient}
KEYSTONE_VENV=${CVB_KEYSTONE_VENV:-/opt/cvb-keystone}
NOVA_VENV=${CVB_NOVA_VENV:-/opt/cvb-nova}
NEUTRON_VENV=${CVB_NEUTRON_VENV:-/opt/cvb-neutron}
CVB_PROFILES=(plugin stock kvm)

cvb_log() {
    echo "cvb-deploy [${SECONDS}s]: $*" >&2
}

cvb_die() {
    cvb_log "ERROR: $*"
    exit 1
}

cvb_free_port() {
    # A TCP port nobody listens on at 127.0.0.1 right now.
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

cvb_secret() {
    python3 -c 'import secrets; print(secrets.token_hex(16))'
}

cvb_pid_alive() {
    # cvb_pid_alive PIDFILE: true when the process it names is running.
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}

cvb_start() {
    # cvb_start PIDFILE LOGFILE COMMAND...: start COMMAND in the background
    # (its output to LOGFILE) and record its PID.
    local pidfile=$1 logfile=$2
    shift 2
    "$@" >>"$logfile" 2>&1 </dev/null 7>&- &
    echo $! >"$pidfile"
}

cvb_stop() {
    # cvb_stop PIDFILE [SECONDS]: SIGTERM the process named in PIDFILE, wait
    # for it to end, SIGKILL it after SECONDS (default 15); remove PIDFILE.
    local pidfile=$1 wait=${2:-15} pid i
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile")
        if cvb_pid_alive "$pidfile"; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < wait * 10; i++)); do
                cvb_pid_alive "$pidfile" || break
                sleep 0.1
            done
            if cvb_pid_alive "$pidfile"; then
                cvb_log "$(basename "$pidfile" .pid) ($pid) ignored SIGTERM;" \
                    "sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    fi
    rm -f "$pidfile"
}

cvb_stop_all() {
    # cvb_stop_all SECONDS PIDFILE...: cvb_stop, for several processes at
    # once (SIGTERM to all, then wait).
    local wait=$1 f pid i alive
    shift
    for f in "$@"; do
        cvb_pid_alive "$f" && kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    for ((i = 0; i < wait * 10; i++)); do
        alive=0
        for f in "$@"; do
            cvb_pid_alive "$f" && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for f in "$@"; do
        cvb_stop "$f" 1
    done
}

cvb_wait_port() {
    # cvb_wait_port PORT SECONDS PIDFILE: wait until something listens on
    # 127.0.0.1:PORT; fail early when the process in PIDFILE has ended.
    local port=$1 wait=$2 pidfile=$3 i
    for ((i = 0; i < wait * 10; i++)); do
        if python3 -c 'import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
                "$port" 2>/dev/null; then
            return 0
        fi
        cvb_pid_alive "$pidfile" || return 1
        sleep 0.1
    done
    return 1
}

cvb_wait_http() {
    # cvb_wait_http URL SECONDS PIDFILE: wait until URL answers 2xx/3xx;
    # fail early when the process in PIDFILE has ended.
    local url=$1 wait=$2 pidfile=$3 i
    for ((i = 0; i < wait * 5; i++)); do
        if python3 -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5).close()' "$url" 2>/dev/null
        then
            return 0
        fi
        cvb_pid_alive "$pidfile" || return 1
        sleep 0.2
    done
    return 1
}

cvb_load_env() {
    # cvb_load_env FILE: source a KEY=VALUE file written by this tooling.
    # shellcheck disable=SC1090
    [ -f "$1" ] && source "$1"
}

cvb_mounts_under() {
    # cvb_mounts_under DIR: the mount points at or under DIR in this mount
    # namespace, one a line, deepest (and, on one path, newest) first: the
    # order to unmount them in. (Paths as /proc/self/mountinfo writes them:
    # the deployment's have no blanks.)
    local d
    d=$(realpath -m -- "$1")
    awk -v d="$d" '$5 == d || index($5, d "/") == 1 { print NR, $5 }' \
        /proc/self/mountinfo | sort -k2,2r -k1,1nr | cut -d' ' -f2-
}
