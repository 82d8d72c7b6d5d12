#!/bin/bash
#
# Install the addons of the commit (downloaded by the `download` init container)
# and create the build's databases.
#
# If installing the addons fails, the build still succeeds with the base-only
# database, so reviewers can look around and read the log.
#

set -ex

# The `download` init container's log, here where the build's init log is read.
cat /mnt/data/runboat-download.log || true
if [ ! -f /mnt/data/runboat-download.ok ]; then
    echo "Downloading the source failed."
    exit 1
fi

ODOO=$(which odoo || which openerp-server)

# Install the repository and its dependencies in the image's virtualenv.
cd "${ADDONS_DIR}"
INSTALL_METHOD=${INSTALL_METHOD:-oca_install_addons}
if [[ "${INSTALL_METHOD}" == "oca_install_addons" ]]; then
    oca_install_addons
elif [[ "${INSTALL_METHOD}" == "editable_pip_install" ]]; then
    pip install -e .
else
    echo "Unsupported INSTALL_METHOD: '${INSTALL_METHOD}'"
    exit 1
fi

# Keep a copy of the virtualenv on the volume: the Deployment mounts it at
# /opt/odoo-venv, so starting does not reinstall anything.
rm -fr /mnt/data/odoo-venv
mkdir -p /mnt/data/odoo-venv
cp -a /opt/odoo-venv/. /mnt/data/odoo-venv/

oca_wait_for_postgres

# Drop the databases, in case we are reinitializing.
dropdb --if-exists "${PGDATABASE}"
dropdb --if-exists "${PGDATABASE}-baseonly"

ADDONS=$(manifestoo --select-addons-dir "${ADDONS_DIR}" --select-include "${INCLUDE:-}" --select-exclude "${EXCLUDE:-}" list --separator=,)

# Odoo 19+ loads no demo data by default; older versions ignore this unknown option
# in the configuration file (while --with-demo would be an error).
echo "with_demo = True" >> "${ODOO_RC}"

# The base-only database, kept as a fallback if installing the addons fails.
unbuffer "${ODOO}" \
    --data-dir=/mnt/data/odoo-data-dir \
    --db-template=template1 \
    -d "${PGDATABASE}-baseonly" \
    -i base \
    --stop-after-init

# Install all addons. On failure keep the base-only database and let the build
# start, so users can work with it and read this log.
if ! unbuffer "${ODOO}" \
    --data-dir=/mnt/data/odoo-data-dir \
    --db-template=template1 \
    -d "${PGDATABASE}" \
    -i "${ADDONS:-base}" \
    --stop-after-init; then
    echo "Installing the addons failed: keeping only the base-only database ${PGDATABASE}-baseonly."
    dropdb --if-exists "${PGDATABASE}"
fi

touch /mnt/data/initialized
