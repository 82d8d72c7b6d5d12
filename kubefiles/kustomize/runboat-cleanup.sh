#!/bin/bash
#
# Drop the build's databases when it is undeployed.
#

set -ex

dropdb --if-exists --force "${PGDATABASE}"
dropdb --if-exists --force "${PGDATABASE}-baseonly"
