#!/usr/bin/env bash
# Install the nightly captioning service on a Linux server, as root, from a checkout of this
# repository: a system user, a copy of the checked-out code, a virtual environment with
# llama-cpp-python built for CUDA, the model downloaded ahead of the first night, and the
# systemd service and timer with the paths below filled in. Running it again upgrades in place
# (it copies the checkout's committed code again and keeps the caches).
#
#   sudo deploy/install.sh
#   sudo VIDEOS=/data/incoming CAPTIONS=/data/captions MODEL=llava16_mistral_7b deploy/install.sh
#   sudo CMAKE_ARGS=-DCMAKE_CUDA_ARCHITECTURES=90a deploy/install.sh   # build for H100/H200 only
#   sudo SCHEDULER=cron deploy/install.sh         # the service user's crontab instead of systemd
#   sudo GPU=no MODEL=tiny deploy/install.sh      # a CPU-only trial with the generated tiny model
#
# Needs python3 (3.10+) with venv, a C/C++ toolchain, git, and for GPU=cuda the CUDA toolkit
# (nvcc) of the driver's CUDA version; it checks them first and names each one missing. cmake is
# fetched by pip when the system has none (or one too old).
set -euo pipefail

PREFIX=${PREFIX:-/opt/video-caption-pipeline}  # the code and its .venv
SERVICE_USER=${SERVICE_USER:-captioner}        # runs the nights; its home holds the model cache
VIDEOS=${VIDEOS:-/srv/videos/incoming}         # where the day's videos land (read)
CAPTIONS=${CAPTIONS:-/srv/captions}            # output_dir (written): Parquet, _logs/, _last_run.json
MODEL=${MODEL:-llava16_34b}                    # the preset, downloaded now (about 25 GB for the 34B; on a
                                               # GPU with room, also its F16 copy: 69 GB, model.text_type)
GPU=${GPU:-cuda}                               # cuda: llama-cpp-python built for CUDA; no: a CPU build
CMAKE_ARGS=${CMAKE_ARGS:-}                     # more llama.cpp build flags, after the ones GPU= sets
SCHEDULER=${SCHEDULER:-systemd}                # systemd: service and timer; cron: the service user's crontab
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}

src=$(cd "$(dirname "$0")/.." && pwd)
step() { printf '\n== %s\n' "$*"; }
as_user() { runuser -u "$SERVICE_USER" -- env HOME="$home" "$@"; }

step "prerequisites"
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 not found: $2"); }
[ "$(id -u)" = 0 ] || missing+=("not root: run it with sudo; it adds a user and writes $PREFIX")
case $GPU in cuda|no) ;; *) missing+=("GPU=$GPU: choose GPU=cuda or GPU=no") ;; esac
case $SCHEDULER in systemd|cron) ;; *) missing+=("SCHEDULER=$SCHEDULER: choose SCHEDULER=systemd or SCHEDULER=cron") ;; esac
if ! command -v python3 >/dev/null 2>&1; then
  missing+=("python3 not found: install Python 3.10 or newer (Debian/Ubuntu: apt-get install python3)")
elif ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  missing+=("python3 is $(python3 -c 'import platform; print(platform.python_version())'): 3.10 or newer is needed")
elif ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing+=("python3 has no venv module: apt-get install python3-venv (python3.X-venv for your python3)")
fi
need git "apt-get install git (the code is copied from this checkout with git archive)"
need runuser "apt-get install util-linux"
need cc "a C compiler builds llama-cpp-python: apt-get install build-essential"
need c++ "a C++ compiler builds llama-cpp-python: apt-get install build-essential"
if [ "$GPU" = cuda ]; then
  need nvcc "the CUDA toolkit's compiler, on PATH (export PATH=/usr/local/cuda/bin:\$PATH), or GPU=no for a CPU build"
fi
if [ "$SCHEDULER" = cron ]; then
  need crontab "apt-get install cron, or SCHEDULER=systemd"
fi
if [ ${#missing[@]} -gt 0 ]; then
  printf 'deploy/install.sh: %s\n' "${missing[@]}" >&2
  exit 1
fi
echo "python3 $(python3 -c 'import platform; print(platform.python_version())'), compilers, git$([ "$GPU" = cuda ] && echo ", nvcc")"

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
  # The README's GPU install line (docs/gpu.md): without these flags pip builds a CPU-only
  # llama.cpp. The caller's CMAKE_ARGS come last, so they add to these or override them.
  CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF -DGGML_CUDA_FORCE_CUBLAS=ON -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL $CMAKE_ARGS" \
    "${pip[@]}" --no-cache-dir --force-reinstall "$llama"
else
  CMAKE_ARGS="-DGGML_NATIVE=OFF $CMAKE_ARGS" "${pip[@]}" "$llama"
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

# The shipped unit or crontab with this install's paths, user and model.
filled() {
  sed -e "s|/opt/video-caption-pipeline|$PREFIX|g" -e "s|^User=captioner|User=$SERVICE_USER|" \
      -e "s|video=/srv/videos/incoming|video=$VIDEOS|" -e "s|output_dir=/srv/captions|output_dir=$CAPTIONS|" \
      -e "s|/srv/captions/_logs/|$CAPTIONS/_logs/|g" \
      -e "s|model=llava16_34b|model=$MODEL model.n_gpu_layers=$gpu_layers|" "$1"
}

if [ "$SCHEDULER" = cron ]; then
  step "crontab of $SERVICE_USER: nightly at 01:00, log in $home/video-caption-cron.log"
  filled "$PREFIX/deploy/crontab" | crontab -u "$SERVICE_USER" -
  cat <<EOF

Installed. The job:            sudo crontab -u $SERVICE_USER -l
What the nights said:          $home/video-caption-cron.log; cron mails a night that failed outright
The last night, for machines:  $CAPTIONS/_last_run.json; full logs in $CAPTIONS/_logs/
EOF
  exit 0
fi

step "systemd units in $UNIT_DIR"
mkdir -p "$UNIT_DIR"
filled "$PREFIX/deploy/video-caption.service" > "$UNIT_DIR/video-caption.service"
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
