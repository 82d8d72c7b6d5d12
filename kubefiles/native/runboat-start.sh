#!/bin/bash
#
# Start Odoo on the database created by initialization (or its base-only fallback).
#

set -ex

if [ ! -f /mnt/data/initialized ]; then
    echo "Build is not initialized. Cannot start."
    exit 1
fi

# Show what is installed (the virtualenv of initialization is mounted on /opt/odoo-venv).
pip list

# Add ADDONS_DIR to addons_path, as oca_install_addons did during initialization:
# $ODOO_RC is not on the volume, so it is lost in this new container.
echo "addons_path=${ADDONS_PATH},${ADDONS_DIR}" >> "${ODOO_RC}"
cat "${ODOO_RC}"

# Install the 'deb' external dependencies of all addons in the path.
DEBIAN_FRONTEND=noninteractive apt-get install -qq --no-install-recommends $(oca_list_external_dependencies deb)

oca_wait_for_postgres

# Serve the full database, or the base-only one when installing the addons failed.
DATABASE="${PGDATABASE}"
if [ "$(psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '${PGDATABASE}'")" != "1" ]; then
    DATABASE="${PGDATABASE}-baseonly"
fi

# --db_user is necessary for Odoo <= 10. Mail goes to the mail catcher sidecar.
unbuffer $(which odoo || which openerp-server) \
    --data-dir=/mnt/data/odoo-data-dir \
    --no-database-list \
    --database "${DATABASE}" \
    --db-filter="^${DATABASE}\$" \
    --db_user="${PGUSER}" \
    --smtp=localhost \
    --smtp-port=1025
