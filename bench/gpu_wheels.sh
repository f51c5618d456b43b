#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks for bench/gpu.py's step 4 (the server and
# its aiortc clients): exactly bench/gpu_wheels.txt, packed into .whl/wheels.tar.xz (.whl/ is
# git-ignored by .gitignore's /.whl/ line, so the device tool carries it only when a call
# names it: carry [".whl"]). The device machine has Python 3.12 and no registry; its command
# (bench/gpu.py's docstring) unpacks the archive and installs the wheels into /tmp/site.
#
# Why an archive: the wheels are 56 MiB as downloaded (PyAV's FFmpeg alone 34), the device
# tool carries 64 MiB with the repository; stored uncompressed and xz-packed together they
# are about 40.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
mkdir -p .whl/dl
# --no-deps: the list is the closure already (what the image holds is left out); the
# platforms are the device README's (pip matches each manylinux tag exactly).
grep -v '^#' bench/gpu_wheels.txt | grep . | xargs python3 -m pip download -q --no-deps \
    --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl/dl
wanted=$(grep -v '^#' bench/gpu_wheels.txt | grep -c .)
got=$(find .whl/dl -type f -name '*.whl' | wc -l)
if [ "$got" -ne "$wanted" ]; then
    echo "expected $wanted wheels (bench/gpu_wheels.txt), got $got in .whl/dl" >&2
    exit 1
fi
echo "downloaded: $(du -sm .whl/dl | cut -f1) MiB, $got wheels"
# A wheel is a zip; stored (not deflated) its files compress across each other in xz. pip
# installs a stored wheel as it does a deflated one (RECORD hashes the files, not the zip).
python3 - <<'PY'
import pathlib, zipfile
for path in sorted(pathlib.Path(".whl/dl").glob("*.whl")):
    stored = path.with_suffix(".stored")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            info.compress_type = zipfile.ZIP_STORED
            dst.writestr(info, data)
    stored.replace(path)
PY
tar -C .whl/dl -cf - . | xz -6 -T0 > .whl/wheels.tar.xz
rm -rf .whl/dl
echo "packed: $(du -m .whl/wheels.tar.xz | cut -f1) MiB in .whl/wheels.tar.xz"
# The astronaut's face, detected here: OpenCV 5 (which the GPU image may hold) has no Haar
# cascades, and the server's avatar store takes a prepared entry instead of detecting again.
python3 server.py prepare avatars/astronaut.jpg --cache .whl/avatar-cache >/dev/null
echo "prepared: $(ls .whl/avatar-cache) in .whl/avatar-cache"
