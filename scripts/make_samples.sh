#!/usr/bin/env bash
# Regenerates sample_meshes/ exactly (the generator is deterministic for a seed and options).
# Two patients x two visits, ~60k faces, 2048 px textures, small enough for git.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BODYMAP:-.venv/bin/bodymap}
COMMON="--lesions 150 --texture 2048 --faces 56000 --visits 2 --quiet"
rm -rf sample_meshes/SYN00101 sample_meshes/SYN00102
$B synth sample_meshes --seed 101 $COMMON --sex female --age 34 --fitzpatrick 2 --poses a-pose random
$B synth sample_meshes --seed 102 $COMMON --sex male --age 58 --fitzpatrick 4 --poses arms-down arms-raised
du -sh sample_meshes
