#!/usr/bin/env bash
# Build `.whl/`, the wheels a GPU machine without network access needs to run this package, and copy the CIFAR-10
# JPEG tarball into `.devdata/` (both folders are git-ignored and travel with the checkout).
#
# Target: CPython 3.12 on x86-64 Linux whose image already holds torch, torchvision, accelerate and the scientific
# stack (the list in IMAGE below) but not fastai, fastcore, fastprogress or nbdev. The wheels are the package itself
# (built from this checkout) and every runtime requirement of fastai, fastcore, fastprogress and defixmatch that
# the image lacks, each at the version this checkout is tested with. Checked at the end: every non-optional
# Requires-Dist of every wheel (markers evaluated for Python 3.12 on Linux) is in the wheelhouse, in the image, or
# in SKIP with its reason.
#
#     bash tools/make_wheelhouse.sh                # then: bash benchmarks/device_check.sh on the GPU machine
#     TGZ=path/to/cifar10-jpeg.tar.gz bash tools/make_wheelhouse.sh
#
# Environment: PYTHON (a Python with pip, default python3), TGZ (the CIFAR-10 tarball, default
# ../shared/data/cifar10-jpeg.tar.gz beside the checkout), WHL (default .whl), DEVDATA (default .devdata).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHL=${WHL:-.whl}
DEVDATA=${DEVDATA:-.devdata}
TGZ=${TGZ:-../shared/data/cifar10-jpeg.tar.gz}

# name==version: what the image lacks (the versions this checkout is tested with)
WANT=(
  fastai==2.8.12 fastcore==2.2.41 fastprogress==1.1.6 fasttransform==0.0.5 fastdownload==0.0.8
  plum-dispatch==2.9.0 beartype==0.23.1
  python-fasthtml==0.14.14 starlette==1.10.0 itsdangerous==2.2.0 python-multipart==0.0.34 oauthlib==4.0.1
  uvicorn==0.54.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 beautifulsoup4==4.15.0 soupsieve==4.1.3
  defusedxml==0.7.1
)
# requirements left out on purpose (never imported by this package's code paths), with the reason
SKIP="spacy (fastai.text only; about 30 MiB with its own requirements)
nbdev (development of this package; not imported at run time)
httpx2-jsfetch (emscripten only)"
# packages of the GPU machine's image (normalised names)
IMAGE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson
ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# 1. download into a fresh folder, then replace .whl/ whole (never a half-built wheelhouse, never two versions)
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$tmp/whl" "${WANT[@]}"
# the package, built from a clean copy of this checkout's sources (no stale build/ folder, nothing left behind)
mkdir -p "$tmp/src" && cp -r pyproject.toml README.md defixmatch "$tmp/src/"
find "$tmp/src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp/whl" "$tmp/src" \
  || "$PYTHON" -m pip wheel -q --no-deps -w "$tmp/whl" "$tmp/src"
# 2. closure check
"$PYTHON" - "$tmp/whl" "$IMAGE" "$SKIP" <<'EOF'
import sys, zipfile, re
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon
folder, image, skip = Path(sys.argv[1]), set(map(canon, sys.argv[2].split())), {canon(l.split()[0]) for l in sys.argv[3].splitlines()}
env = dict(python_version='3.12', python_full_version='3.12.3', sys_platform='linux', platform_system='Linux',
           platform_machine='x86_64', os_name='posix', implementation_name='cpython', platform_python_implementation='CPython', extra='')
have, reqs = {}, []
for w in sorted(folder.glob('*.whl')):
    with zipfile.ZipFile(w) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))).decode()
    name = canon(re.search(r'^Name: (.+)$', meta, re.M).group(1).strip())
    if name in have: sys.exit(f'two versions of {name} in the wheelhouse')
    have[name] = w.name
    for line in re.findall(r'^Requires-Dist: (.+)$', meta, re.M):
        r = Requirement(line)
        if r.marker is None or r.marker.evaluate(env): reqs.append((name, r))
missing = sorted({f'{n} (required by {by})' for by, r in reqs for n in [canon(r.name)] if n not in have and n not in image and n not in skip})
clash = sorted(n for n in have if n in image and n != 'defixmatch')
if clash: print('note: also in the image (the wheel takes precedence on PYTHONPATH):', ', '.join(clash))
if missing: sys.exit('requirements neither in the wheelhouse, nor in the image, nor skipped: ' + '; '.join(missing))
print(f'closure checked: {len(have)} wheels, {len(reqs)} requirements')
EOF
rm -rf "$WHL.new"; mv "$tmp/whl" "$WHL.new"; rm -rf "$WHL"; mv "$WHL.new" "$WHL"
ls -1 "$WHL"; du -sh "$WHL"
# 3. the CIFAR-10 tarball (copied through a temporary name: never a half-written copy)
if [ -f "$TGZ" ]; then
  mkdir -p "$DEVDATA"
  if ! cmp -s "$TGZ" "$DEVDATA/cifar10-jpeg.tar.gz"; then
    cp "$TGZ" "$DEVDATA/.cifar10-jpeg.tar.gz.part" && mv "$DEVDATA/.cifar10-jpeg.tar.gz.part" "$DEVDATA/cifar10-jpeg.tar.gz"
  fi
  du -sh "$DEVDATA"
else
  echo "no CIFAR-10 tarball at $TGZ: $DEVDATA/ not filled (the device check then uses random images)"
fi
du -shc "$WHL" "$DEVDATA" 2>/dev/null | tail -1
