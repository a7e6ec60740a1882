#!/usr/bin/env bash
# Install the nightly captioning service on a Linux server, as root, from a checkout of this
# repository: a system user, a copy of the checked-out code, a virtual environment with
# llama-cpp-python built for CUDA, the model downloaded ahead of the first night, and the
# systemd service and timer with the paths below filled in. Running it again upgrades in place
# (it copies the checkout's committed code again and keeps the caches).
#
#   sudo deploy/install.sh
#   sudo VIDEOS=/data/incoming CAPTIONS=/data/captions MODEL=llava16_mistral_7b deploy/install.sh
#   sudo GPU=no MODEL=tiny deploy/install.sh      # a CPU-only trial with the generated tiny model
#
# Needs python3 (3.10+) with venv, a C/C++ toolchain, git, and for GPU=cuda the CUDA toolkit
# (nvcc) of the driver's CUDA version.
set -euo pipefail

PREFIX=${PREFIX:-/opt/video-caption-pipeline}  # the code and its .venv
SERVICE_USER=${SERVICE_USER:-captioner}        # runs the nights; its home holds the model cache
VIDEOS=${VIDEOS:-/srv/videos/incoming}         # where the day's videos land (read)
CAPTIONS=${CAPTIONS:-/srv/captions}            # output_dir (written): Parquet, _logs/, _last_run.json
MODEL=${MODEL:-llava16_34b}                    # the preset, downloaded now (about 25 GB for the 34B; on a
                                               # GPU with room, also its F16 copy: 69 GB, model.text_type)
GPU=${GPU:-cuda}                               # cuda: llama-cpp-python built for CUDA; no: a CPU build
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}

src=$(cd "$(dirname "$0")/.." && pwd)
step() { printf '\n== %s\n' "$*"; }
as_user() { runuser -u "$SERVICE_USER" -- env HOME="$home" "$@"; }

step "user $SERVICE_USER"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
  useradd --system --create-home --home-dir "/var/lib/$SERVICE_USER" --shell /usr/sbin/nologin "$SERVICE_USER"
fi
home=$(getent passwd "$SERVICE_USER" | cut -d: -f6)

step "code: $src (HEAD $(git -C "$src" rev-parse --short HEAD)) -> $PREFIX"
mkdir -p "$PREFIX"
git -C "$src" archive HEAD | tar -x -C "$PREFIX"

step "virtual environment $PREFIX/.venv (llama-cpp-python: GPU=$GPU)"
python3 -m venv "$PREFIX/.venv"
pip=("$PREFIX/.venv/bin/pip" install --quiet)
llama=$(grep -o '"llama-cpp-python==[^"]*"' "$PREFIX/pyproject.toml" | tr -d '"')
if [ "$GPU" = cuda ]; then
  # The README's GPU install line: without these flags pip builds a CPU-only llama.cpp.
  CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF -DGGML_CUDA_FORCE_CUBLAS=ON -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL" \
    "${pip[@]}" --no-cache-dir --force-reinstall "$llama"
else
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "${pip[@]}" "$llama"
fi
"${pip[@]}" "$PREFIX"
if [ "$GPU" = cuda ] && ! "$PREFIX/.venv/bin/python" -c \
    "import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())"; then
  echo "llama-cpp-python was built without GPU support: is the CUDA toolkit (nvcc) on PATH?" >&2
  exit 1
fi
gpu_layers=$([ "$GPU" = cuda ] && echo -1 || echo 0)

step "folders: videos $VIDEOS (read), captions $CAPTIONS (written by $SERVICE_USER)"
[ -d "$VIDEOS" ] || { echo "$VIDEOS does not exist; create it or set VIDEOS=" >&2; exit 1; }
mkdir -p "$CAPTIONS"
chown "$SERVICE_USER" "$CAPTIONS"

step "model $MODEL, downloaded now into $home/.cache (the service runs offline)"
(cd "$PREFIX" && as_user "$PREFIX/.venv/bin/python" -m pipeline.download "model=$MODEL")

step "check: a dry run as $SERVICE_USER, as the service will run"
(cd "$PREFIX" && as_user HF_HUB_OFFLINE=1 "$PREFIX/.venv/bin/python" -m pipeline "video=$VIDEOS" \
  "output_dir=$CAPTIONS" "model=$MODEL" "model.n_gpu_layers=$gpu_layers" dry_run=true | tail -n 1)

step "systemd units in $UNIT_DIR"
mkdir -p "$UNIT_DIR"
sed -e "s|/opt/video-caption-pipeline|$PREFIX|g" -e "s|^User=captioner|User=$SERVICE_USER|" \
    -e "s|video=/srv/videos/incoming|video=$VIDEOS|" -e "s|output_dir=/srv/captions|output_dir=$CAPTIONS|" \
    -e "s|model=llava16_34b|model=$MODEL model.n_gpu_layers=$gpu_layers|" \
    "$PREFIX/deploy/video-caption.service" > "$UNIT_DIR/video-caption.service"
cp "$PREFIX/deploy/video-caption.timer" "$UNIT_DIR/video-caption.timer"
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now video-caption.timer
  systemctl list-timers video-caption.timer --no-pager
else
  echo "systemd is not running here: the units are written, not enabled"
fi

cat <<EOF

Installed. A run now:          systemctl start video-caption.service
What the nights said:          journalctl -u video-caption
A night that failed outright:  systemctl --failed (exit 1, or 3: every video failed)
The last night, for machines:  $CAPTIONS/_last_run.json; full logs in $CAPTIONS/_logs/
EOF
