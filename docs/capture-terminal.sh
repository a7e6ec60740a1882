#!/usr/bin/env bash
# Writes docs/terminal-3-videos.txt: tmux screen captures (capture-pane) of a 3-video run of
# the tiny model in a 120x32 terminal, mid-run and at the end. Needs tmux and the checkout's
# .venv (the run uses this checkout's code, from a scratch folder). Usage: docs/capture-terminal.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/terminal-3-videos.txt}
work=$(mktemp -d)
trap 'tmux kill-session -t capture 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/night"
for i in 1 2 3; do  # three copies of the sample clip, each with its own content id
  cp data/sample.mp4 "$work/night/clip$i.mp4"; printf '%s' "$i" >> "$work/night/clip$i.mp4"
done
touch -d '10 minutes ago' "$work"/night/*.mp4  # settled: older than min_age_s
tmux new-session -d -s capture -x 120 -y 32 "bash --norc --noprofile"
tmux send-keys -t capture "cd $PWD && . .venv/bin/activate && export PYTHONPATH=$PWD && cd $work && PS1='$ ' && clear" Enter
sleep 1
tmux send-keys -t capture \
  "python -m pipeline video=night model=tiny output_dir=captions sampler.interval_s=0.5 report=false" Enter
wait_for() { for _ in $(seq 1500); do tmux capture-pane -p -t capture | grep -q "$1" && return; sleep 0.2; done; }
trim() { sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'; }
wait_for "done night/clip1.mp4"; sleep 2
mid=$(tmux capture-pane -p -t capture)
wait_for "finished:"; sleep 1
end=$(tmux capture-pane -p -t capture)
{
  echo "# tmux capture-pane of a 3-video run (tiny model, 12 frames per video), 120-column terminal"
  echo "# made by docs/capture-terminal.sh"
  echo
  echo "## mid-run, after the first video"
  echo
  printf '%s\n' "$mid" | trim
  echo
  echo "## at the end"
  echo
  printf '%s\n' "$end" | trim
} > "$out"
