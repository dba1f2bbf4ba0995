#!/usr/bin/env bash
# Set everything up, scan RegionA of the published ATLAS sbottom likelihoods (data/, HEPData
# ins1748602), print the table and draw the exclusion plot into out/.
# Usage: bash scripts/demo.sh [extra pyhf-dask scan options]
# PYHF_DASK_DATA=DIR reads the archive from DIR instead of the repository's data/ folder.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ARCHIVE_NAME=pyhf-ins1748602-probability-models.tar.gz
# Check the input before the (long) install; a relative PYHF_DASK_DATA is taken from here.
DATA=$(cd "${PYHF_DASK_DATA:-$ROOT/data}" 2>/dev/null && pwd) || DATA=${PYHF_DASK_DATA:-$ROOT/data}
ARCHIVE=$DATA/$ARCHIVE_NAME
if [ ! -f "$ARCHIVE" ]; then
  echo "Error [archive]: $ARCHIVE: no such file (the archive ships in the repository's" \
    "data/ folder, see data/README.md; set PYHF_DASK_DATA to a folder that holds $ARCHIVE_NAME)" >&2
  exit 2
fi
source "$ROOT/scripts/_env.sh" "jax,plot"
mkdir -p out
printf '==> scanning RegionA of %s\n' "$ARCHIVE" >&2
pyhf-dask scan "$ARCHIVE" \
  --region RegionA --labels msb,mn2,mn1 \
  --normsys-interpcode code4 --histosys-interpcode code4p \
  -o out/regionA.nc --table "$@"
printf '==> drawing the exclusion plot\n' >&2
pyhf-dask plot out/regionA.nc -o out/exclusion_regionA.png --band2 --symbols \
  --label "ATLAS sbottom multi-b, RegionA (pyhf_dask)" --energy 13 --lumi 139 \
  --kinematic-limit 0
