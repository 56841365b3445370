#!/usr/bin/env bash
# The demo: what the pipeline has so far, run on a bundled sample; outputs under out/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
B=.venv/bin
O=out/demo
mkdir -p $O
S=sample_meshes/SYN00101
$B/bodymap info $S/visit1/scan.obj | tee $O/info.txt
$B/bodymap render $S/visit1/scan.obj $O/SYN00101_visit1.png --views front back left
$B/bodymap render $S/visit2/scan.obj $O/SYN00101_visit2.png --views front back left
$B/bodymap analyze $S/visit1/scan.obj --out $O/SYN00101_visit1_analysis   # anatomy + lesions + exports
# the follow-up visit, tracked against the first: matched, new, missing, grown -> tracking.csv
$B/bodymap analyze $S/visit2/scan.obj --out $O/SYN00101_visit2_analysis --previous $O/SYN00101_visit1_analysis
$B/bodymap synth $O/synth --seed 7 --lesions 120 --texture 1024 --faces 30000
$B/bodymap render $O/synth/SYN00007/visit1/scan.obj $O/SYN00007_visit1.png
echo "demo outputs in $O:"; ls $O
