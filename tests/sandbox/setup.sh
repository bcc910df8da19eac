#!/usr/bin/env bash
# Installs Debian's bubblewrap, the sandbox every job and preflight runs in (docs/sandbox.md).
# Where it cannot be installed (not root, no apt-get) jobs run unsandboxed with a warning and the sandbox
# tests (tests/test_sandbox.py) are skipped, saying why; never fatal.
set -uo pipefail
if command -v bwrap >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/sandbox/setup.sh: bwrap is absent and cannot be installed here (needs apt-get as root);" \
         "jobs will run without a sandbox and the sandbox tests will be skipped" >&2
    exit 0
fi
echo "tests/sandbox/setup.sh: installing bubblewrap (apt-get)" >&2
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1; then
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }; then
        echo "tests/sandbox/setup.sh: installing bubblewrap failed; the sandbox tests will be skipped" >&2
    fi
fi
exit 0
