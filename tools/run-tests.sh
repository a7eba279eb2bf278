#!/usr/bin/env bash
# The project's test command. On a fresh Debian 12 machine, as root:
#   bash tools/run-tests.sh
# It installs what the tests need (Debian packages, a virtualenv with the
# plugin and its test requirements, the test peers: qemu-img, vcsim,
# libvirt/QEMU), runs the unit tests, the functional tests against those
# peers and pep8, and ends with one line "N passed, N failed" counted from
# the results of this run. Exit status is non-zero when anything failed.
set -u -o pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
source tools/lib/venv.sh

bash tools/install-peers.sh || { echo "0 passed, 1 failed"; exit 1; }
ensure_venv || { echo "0 passed, 1 failed"; exit 1; }

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

run_suite() {
    # run_suite NAME TEST_PATH [stestr run args...]
    local name=$1 path=$2
    shift 2
    echo "=== $name tests ($path)"
    "$VENV/bin/stestr" --test-path "$path" run "$@"
    local rc=$?
    "$VENV/bin/stestr" --test-path "$path" last --subunit \
        | "$VENV/bin/subunit2csv" > "$results/$name.csv"
    return $rc
}

rc=0
run_suite unit ./tests/unit || rc=1
run_suite functional ./tests/functional --concurrency 2 || rc=1

echo "=== pep8"
pep8_failed=0
if ! (source "$VENV/bin/activate" && flake8 && \
      bandit -q -r cinder_vmdk_backup -s B404,B603,B607 -ll); then
    pep8_failed=1
    rc=1
fi

"$VENV/bin/python" tools/lib/count_results.py "$results"/*.csv \
    --extra-passed $((1 - pep8_failed)) --extra-failed $pep8_failed || rc=1
exit $rc
