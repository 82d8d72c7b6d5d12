#!/bin/bash
#
# Drop the build's databases when it is undeployed, as the original runboat's script
# does.
#

set -ex

dropdb --if-exists --force "${PGDATABASE}"
dropdb --if-exists --force "${PGDATABASE}-baseonly"
