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
# the standards, with the change since visit 1: SLICE-3D table + 15 mm tiles, DICOM, FHIR
V2=$O/SYN00101_visit2_analysis
$B/bodymap export $V2 --format slice3d $O/SYN00101_visit2_slice3d.csv --tiles $O/SYN00101_visit2_tiles --tracking $V2
$B/bodymap export $V2 --format dicom $O/SYN00101_visit2_dicom --tracking $V2
$B/bodymap export $V2 --format fhir $O/SYN00101_visit2_fhir.json --tracking $V2
$B/bodymap synth $O/synth --seed 7 --lesions 120 --texture 1024 --faces 30000
$B/bodymap render $O/synth/SYN00007/visit1/scan.obj $O/SYN00007_visit1.png
echo "demo outputs in $O:"; ls $O
