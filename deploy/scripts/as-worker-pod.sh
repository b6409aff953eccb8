#!/bin/sh
# Runs a command on this machine under the constraints deploy/k8s gives the worker container,
# as far as they can be reproduced without Kubernetes: a read-only root filesystem and cgroupfs,
# a writable tmpfs at /tmp (the pod's emptyDir) and /var/tmp, uid 0 with only the capabilities
# the Deployment adds (every other one dropped), and no_new_privs
# (allowPrivilegeEscalation: false). Not reproduced: the runtime's seccomp and AppArmor
# profiles, and the container's masked /proc paths.
#
#   sudo deploy/scripts/as-worker-pod.sh .venv/bin/python -m pytest -p no:cacheprovider tests/worker
#
# Needs root and util-linux (unshare, setpriv). Keep CAPABILITIES equal to the worker
# Deployment's `capabilities.add` (tests/deploy checks that).
set -eu

CAPABILITIES="SYS_ADMIN SETUID SETGID KILL CHOWN"

if [ "${AS_WORKER_POD_INSIDE:-}" != 1 ]; then
    # a private mount namespace, so the read-only remounts below stay in it
    AS_WORKER_POD_INSIDE=1 exec unshare --mount --propagation private "$0" "$@"
fi

mount -o remount,bind,ro /
for point in $(findmnt -rn -o TARGET | grep '^/sys/fs/cgroup' || true); do
    mount -o remount,bind,ro "$point" 2>/dev/null || true
done
mount -t tmpfs -o size=5g,mode=1777 tmpfs /tmp
mount -t tmpfs -o size=1g,mode=1777 tmpfs /var/tmp

bounding="-all"
for capability in $CAPABILITIES; do
    bounding="$bounding,+$(echo "$capability" | tr '[:upper:]' '[:lower:]')"
done
# the pod's settings for the same reasons: no bytecode on a read-only disk, no per-job pids
# cgroup on a read-only cgroupfs
export PYTHONDONTWRITEBYTECODE=1 PIDS_CGROUP_ROOT='' HOME=/tmp
exec setpriv --bounding-set="$bounding" --inh-caps=-all --no-new-privs "$@"
