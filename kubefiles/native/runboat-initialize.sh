#!/bin/bash
#
# Initialize the build: fetch and install the commit (runboat-clone-and-install.sh),
# then create its databases, as the original runboat's script does: `<build>-baseonly`
# with `base` only, then `<build>` with the addons of the repository (INCLUDE and
# EXCLUDE select them). If installing the addons fails, the main database is dropped
# and initialization still succeeds: the build starts with the base-only database, so
# reviewers can look around and read this log.
#

set -ex

bash /runboat/runboat-clone-and-install.sh

oca_wait_for_postgres

# Drop the databases, in case we are reinitializing.
dropdb --if-exists "${PGDATABASE}"
dropdb --if-exists "${PGDATABASE}-baseonly"

ADDONS=$(manifestoo --select-addons-dir "${ADDONS_DIR}" --select-include "${INCLUDE}" --select-exclude "${EXCLUDE}" list --separator=,)

# Odoo 19+ loads no demo data by default. Ask for it in the configuration file:
# older versions ignore an unknown option there, while --with-demo would fail.
echo "with_demo = True" >> "${ODOO_RC}"

# The base-only database, the fallback if installing the addons fails.
unbuffer $(which odoo || which openerp-server) \
    --data-dir=/mnt/data/odoo-data-dir \
    --db-template=template1 \
    -d "${PGDATABASE}-baseonly" \
    -i base \
    --stop-after-init

# All the addons. On failure, keep only the base-only database and succeed.
if ! unbuffer $(which odoo || which openerp-server) \
    --data-dir=/mnt/data/odoo-data-dir \
    --db-template=template1 \
    -d "${PGDATABASE}" \
    -i "${ADDONS:-base}" \
    --stop-after-init; then
    dropdb --if-exists "${PGDATABASE}"
fi
