#!/usr/bin/env bash
# Set everything up and scan RegionA of the published ATLAS sbottom likelihoods.
# Usage: bash scripts/demo.sh [extra pyhf-dask scan options]
source "$(dirname "$0")/_env.sh" jax
DATA=${PYHF_DASK_DATA:-../shared/data}
pyhf-dask scan "$DATA/pyhf-ins1748602-probability-models.tar.gz" \
  --region RegionA --labels msb,mn2,mn1 \
  --normsys-interpcode code4 --histosys-interpcode code4p \
  -o regionA.nc --table "$@"
