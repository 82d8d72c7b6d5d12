#!/bin/bash
#
# Download the commit's source tarball into $ADDONS_DIR (on the build's volume).
#
# Runs in its own init container: it is the only one that may see the GitHub token
# of a private repository, and it runs no code of the repository. No `set -x` here:
# the token must never reach a log line.
#
# A failed download does not fail this container: the outcome and the log go to
# the volume, and the `initialize` container (whose log is the build's init log)
# shows them and fails.
#

set -u -o pipefail

log=/mnt/data/runboat-download.log
rm -f /mnt/data/initialized /mnt/data/runboat-download.ok

(
    set -e
    rm -fr "${ADDONS_DIR}"
    mkdir -p "${ADDONS_DIR}"
    tarball=/tmp/runboat-source.tar.gz
    if [ -n "${RUNBOAT_GITHUB_TOKEN:-}" ]; then
        url="https://api.github.com/repos/${RUNBOAT_GIT_REPO}/tarball/${RUNBOAT_GIT_REF}"
        echo "Downloading ${url} (authenticated)"
        # The header goes through curl's config on stdin, so the token is not in argv.
        printf 'header = "Authorization: Bearer %s"\n' "${RUNBOAT_GITHUB_TOKEN}" |
            curl --fail --silent --show-error --location --retry 5 --config - --output "${tarball}" "${url}"
    else
        url="https://github.com/${RUNBOAT_GIT_REPO}/archive/${RUNBOAT_GIT_REF}.tar.gz"
        echo "Downloading ${url}"
        curl --fail --silent --show-error --location --retry 5 --output "${tarball}" "${url}"
    fi
    tar -xzf "${tarball}" -C "${ADDONS_DIR}" --strip-components=1
    rm -f "${tarball}"
    echo "Downloaded ${RUNBOAT_GIT_REPO}@${RUNBOAT_GIT_REF} into ${ADDONS_DIR}"
) > "${log}" 2>&1
status=$?

cat "${log}"
if [ "${status}" -eq 0 ]; then
    touch /mnt/data/runboat-download.ok
fi
