#!/usr/bin/env bash
# Installs Debian's slurm-wlm and munge, for the tests against a real single-node Slurm cluster
# (tests/test_slurm.py, which starts and stops the cluster itself with shared/tools/slurm-single-node.sh).
# Where they cannot be installed (not root, no apt-get) those tests skip, saying why; never fatal here
# (CI sets IDEALAB_REQUIRE_CLUSTERS=1, which turns the skip into a failure).
set -uo pipefail
if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && command -v sbatch >/dev/null 2>&1 \
    && command -v munged >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/slurm/setup.sh: slurm-wlm and munge are absent and cannot be installed here (needs apt-get as" \
         "root); the Slurm tests will be skipped" >&2
    exit 0
fi
echo "tests/slurm/setup.sh: installing slurm-wlm and munge (apt-get)" >&2
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then  # the packages must not start the distribution's own daemons
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
fi
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
if ! install 2>/dev/null; then
    if ! { apt-get update -qq && install; }; then
        echo "tests/slurm/setup.sh: installing slurm-wlm and munge failed; the Slurm tests will be skipped" >&2
    fi
fi
[ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
exit 0
