#!/usr/bin/env bash
# The project's test command. On a fresh Debian 12 machine, as root:
#   bash tools/run-tests.sh
# It installs what the tests need (Debian packages, a virtualenv with the
# plugin and its test requirements, the test peers: qemu-img, vcsim,
# libvirt/QEMU), runs the unit tests, the functional tests against those
# peers and pep8, and ends with one line "N passed, N failed" counted from
# the results of this run. Exit status is non-zero when anything failed.
# The unit and functional suites run twice: under eventlet and with native
# threads only (OS_CINDER_DISABLE_EVENTLET_PATCHING=1); the end-to-end
# tests of the test deployment (tests/functional/deploy: each starts a
# whole Cinder with Keystone, MariaDB and RabbitMQ, two to four minutes)
# run in the first only, to keep the run within CI's time limit.
set -u -o pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
source tools/lib/venv.sh

bash tools/install-peers.sh || { echo "0 passed, 1 failed"; exit 1; }
ensure_venv || { echo "0 passed, 1 failed"; exit 1; }

# Output of passing tests is captured (and shown for failed tests only:
# --suppress-attachments); a test that hangs fails after
# OS_TEST_TIMEOUT seconds (oslotest/Cinder TestCase), a suite after
# CVB_SUITE_TIMEOUT seconds.
export OS_STDOUT_CAPTURE=${OS_STDOUT_CAPTURE:-1}
export OS_STDERR_CAPTURE=${OS_STDERR_CAPTURE:-1}
export OS_LOG_CAPTURE=${OS_LOG_CAPTURE:-1}
export OS_TEST_TIMEOUT=${OS_TEST_TIMEOUT:-600}
suite_timeout=${CVB_SUITE_TIMEOUT:-4200}

results=$(mktemp -d)
# The functional tests start libvirtd when they need it and leave it
# running for the next test; it is stopped (by its PID file) at the end.
trap 'rm -rf "$results"; bash tools/libvirt/stop.sh >/dev/null 2>&1 || true' EXIT

run_suite() {
    # run_suite NAME TEST_PATH [stestr run args...]
    local name=$1 path=$2
    shift 2
    echo "=== $name tests ($path)"
    timeout --kill-after=30 "$suite_timeout" \
        "$VENV/bin/stestr" --test-path "$path" run --suppress-attachments \
        "$@"
    local rc=$?
    "$VENV/bin/stestr" --test-path "$path" last --subunit \
        > "$results/$name.subunit"
    "$VENV/bin/subunit2csv" < "$results/$name.subunit" > "$results/$name.csv"
    if [ $rc -ne 0 ] && ! grep -qE ',(fail|failure|error),' "$results/$name.csv"; then
        # The runner failed without a failed test to show for it (a
        # timeout, a crash): count the suite itself as one failure.
        echo "$name suite: runner exited $rc (timeout after" \
             "${suite_timeout}s if 124),fail,," >> "$results/$name.csv"
    fi
    return $rc
}

# Every suite runs twice: monkey-patched by eventlet, as Cinder 29's
# services run by default, and with native threads only, as they run with
# OS_CINDER_DISABLE_EVENTLET_PATCHING=1 (OpenStack is removing eventlet).
rc=0
run_suite unit ./tests/unit || rc=1
OS_CINDER_DISABLE_EVENTLET_PATCHING=1 \
    run_suite unit-threads ./tests/unit || rc=1
run_suite functional ./tests/functional --concurrency 2 || rc=1
OS_CINDER_DISABLE_EVENTLET_PATCHING=1 \
    run_suite functional-threads ./tests/functional --concurrency 2 \
        --exclude-regex '^tests\.functional\.deploy\.' || rc=1

echo "=== pep8"
pep8_failed=0
if ! (source "$VENV/bin/activate" && flake8 && \
      bandit -q -r cinder_vmdk_backup -s B404,B603,B607 -ll); then
    pep8_failed=1
    rc=1
fi

subunit_args=()
for f in "$results"/*.subunit; do subunit_args+=(--subunit "$f"); done
"$VENV/bin/python" tools/lib/count_results.py "$results"/*.csv \
    "${subunit_args[@]}" \
    --extra-passed $((1 - pep8_failed)) --extra-failed $pep8_failed || rc=1
exit $rc
