#!/bin/bash
#
# Fetch the commit's source into $ADDONS_DIR and install it with its dependencies,
# as the original runboat's script of the same name does: clear the volume, download
# the GitHub tarball, install (oca_install_addons, or `pip install -e .` with
# INSTALL_METHOD=editable_pip_install), keep a copy of the virtualenv on the volume
# and mark the build initialized. runboat-initialize.sh runs it, then creates the
# databases.
#
# Private repositories (opt-in, see kubefiles/README.md): the Job's `download` init
# container runs `runboat-clone-and-install.sh download` with the token, and the
# `initialize` container (RUNBOAT_SOURCE_DOWNLOADED=1) skips the download. The token
# never reaches a log line: no `set -x` in the download, and the header goes to curl
# on stdin. A failed download does not fail the init container: its log and outcome
# are left on the volume, and the `initialize` container (whose log is the build's
# init log) prints them and fails.
#

download_with_token() {
    set -u -o pipefail
    local log=/mnt/data/runboat-download.log
    # Clear the volume (a previous initialization's data and sentinel) first.
    rm -fr /mnt/data/*
    (
        set -e
        mkdir -p "${ADDONS_DIR}"
        local url="https://api.github.com/repos/${RUNBOAT_GIT_REPO}/tarball/${RUNBOAT_GIT_REF}"
        echo "Downloading ${url}${RUNBOAT_GITHUB_TOKEN:+ (authenticated)}"
        if [ -n "${RUNBOAT_GITHUB_TOKEN:-}" ]; then
            printf 'header = "Authorization: Bearer %s"\n' "${RUNBOAT_GITHUB_TOKEN}" |
                curl -sSL --fail --retry 5 --config - "${url}" |
                tar zxf - -C "${ADDONS_DIR}" --strip-components=1
        else
            curl -sSL --fail --retry 5 "${url}" | tar zxf - -C "${ADDONS_DIR}" --strip-components=1
        fi
        echo "Downloaded ${RUNBOAT_GIT_REPO}@${RUNBOAT_GIT_REF} into ${ADDONS_DIR}"
    ) > "${log}" 2>&1
    local status=$?
    cat "${log}"
    if [ "${status}" -eq 0 ]; then
        touch /mnt/data/runboat-download.ok
    fi
    return 0
}

if [ "${1:-}" = "download" ]; then
    download_with_token
    exit 0
fi

set -exo pipefail

if [ -n "${RUNBOAT_SOURCE_DOWNLOADED:-}" ]; then
    # The `download` init container's log, here where the build's init log is read.
    cat /mnt/data/runboat-download.log || true
    if [ ! -f /mnt/data/runboat-download.ok ]; then
        echo "Downloading the source failed."
        exit 1
    fi
    cd "${ADDONS_DIR}"
else
    # Clear the volume: the initialized sentinel and the data of a previous
    # initialization.
    rm -fr /mnt/data/*
    # Download the commit into $ADDONS_DIR. A tarball rather than a git clone: the
    # clone needed more memory than the pod may use.
    rm -fr "${ADDONS_DIR}"
    mkdir -p "${ADDONS_DIR}"
    cd "${ADDONS_DIR}"
    curl -sSL "https://github.com/${RUNBOAT_GIT_REPO}/tarball/${RUNBOAT_GIT_REF}" | tar zxf - --strip-components=1
fi

# Install the repository and its dependencies in the image's virtualenv.
INSTALL_METHOD=${INSTALL_METHOD:-oca_install_addons}
if [[ "${INSTALL_METHOD}" == "oca_install_addons" ]]; then
    oca_install_addons
elif [[ "${INSTALL_METHOD}" == "editable_pip_install" ]]; then
    pip install -e .
else
    echo "Unsupported INSTALL_METHOD: '${INSTALL_METHOD}'"
    exit 1
fi

# Keep a copy of the virtualenv on the volume: the Deployment mounts it on
# /opt/odoo-venv, so starting reinstalls nothing.
cp -ar /opt/odoo-venv/ /mnt/data/odoo-venv

touch /mnt/data/initialized
