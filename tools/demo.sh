#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine, as root:
#   bash tools/demo.sh
# Installs what it needs (the test peers, the project's virtualenv, the
# one-machine Cinder deployment of tools/deploy), starts Cinder with the
# plugin against the vSphere simulator and a local backup directory (or,
# with CVB_DEPLOY_BACKUP_STORE=swift, a Swift cluster), then
# as a user would with the `openstack` client: creates a volume with data,
# backs it up, changes some data, backs it up incrementally, restores the
# incremental backup to a new volume, checks the restored data byte for
# byte and prints a summary. Everything it started is stopped by PID.
#   bash tools/demo.sh --instance
# The same with a running instance (tools/demo_instance.py): the kvm
# profile with a real Nova boots a server from a plugin volume, backs it up
# while it runs, stops it, restores the backup onto its volume, starts it
# and reads the guest's records back.
set -eu -o pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
source tools/lib/venv.sh
bash tools/install-peers.sh
ensure_venv
exec "$VENV/bin/python" tools/demo.py "$@"
