#!/bin/bash
#
# Start Odoo on the build's databases, as the original runboat's script does. Users
# choose between `<build>` and `<build>-baseonly` (the database filter shows only
# this build's); a random master password keeps them from creating, dropping or
# restoring databases through the database manager.
#

set -ex

if [ ! -f /mnt/data/initialized ]; then
    echo "Build is not initialized. Cannot start."
    exit 1
fi

# Show what is installed (initialization's virtualenv is mounted on /opt/odoo-venv).
pip list

# A random master password, so that nobody can create databases. Unlike the
# original, it is not traced nor printed: the build log is public.
{ set +x; } 2>/dev/null
echo "admin_passwd=$(python3 -c 'import secrets; print(secrets.token_hex())')" >> "${ODOO_RC}"
set -x

# Add ADDONS_DIR to addons_path, as oca_install_addons did during initialization:
# $ODOO_RC is not on the volume, so that is lost in this new container.
echo "addons_path=${ADDONS_PATH},${ADDONS_DIR}" >> "${ODOO_RC}"
grep -v '^admin_passwd' "${ODOO_RC}"

# Install the 'deb' external dependencies of all addons in the path, as
# oca_install_addons did during initialization. The images delete their apt lists:
# update them first.
deb_deps=$(oca_list_external_dependencies deb)
if [ -n "${deb_deps}" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -qq --no-install-recommends ${deb_deps}
fi

oca_wait_for_postgres

# --db_user is necessary for Odoo <= 10. Mail goes to the mail catcher sidecar.
unbuffer $(which odoo || which openerp-server) \
    --data-dir=/mnt/data/odoo-data-dir \
    --db-filter="^${PGDATABASE}" \
    --db_user="${PGUSER}" \
    --smtp=localhost \
    --smtp-port=1025
