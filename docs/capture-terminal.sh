#!/usr/bin/env bash
# Writes docs/terminal-3-videos.txt: what a new user sees of a night of three videos (the tiny
# model), first as cron runs it (sh, cron's bare environment, stdin closed, no TTY, output piped),
# then the next night (nothing left to do) and the night's status, then the same night at a
# terminal (tmux screen captures, mid-run and at the end). Needs the checkout's .venv and tmux;
# the runs use this checkout's code from a scratch folder. Usage: docs/capture-terminal.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/terminal-3-videos.txt}
checkout=$PWD
python=$checkout/.venv/bin/python
work=$(mktemp -d)
trap 'tmux kill-session -t capture 2>/dev/null || true; rm -rf "$work"' EXIT
night() {  # a folder of three copies of the sample clip, each with its own content id, settled
  mkdir "$1"
  for i in 1 2 3; do cp data/sample.mp4 "$1/clip$i.mp4"; printf '%s' "$i" >> "$1/clip$i.mp4"; done
  touch -d '10 minutes ago' "$1"/*.mp4  # older than min_age_s
}
run="python -m pipeline video=night model=tiny output_dir=captions sampler.interval_s=0.5 report=false"

# Under cron: `sh -c` in a bare environment; `python` is this checkout's interpreter.
mkdir "$work/cron" && night "$work/cron/night"
cron() {  # $1: the command as the user would write it in the crontab
  printf '$ %s\n' "$1"
  env -i HOME="$HOME" LOGNAME="$(id -un)" SHELL=/bin/sh PATH="$(dirname "$python"):/usr/bin:/bin" \
    PYTHONPATH="$checkout" sh -c "cd '$work/cron' && $1" </dev/null 2>&1 | cat
  printf '(exit %s)\n\n' "${PIPESTATUS[0]}"
}
status_cmd=""
if "$python" -c "import pipeline.status" 2>/dev/null; then
  status_cmd="python -m pipeline.status output_dir=captions"
fi
cron_part=$(
  cron "$run 2>&1 | cat"
  echo "# the next night: nothing new"
  cron "$run 2>&1 | cat"
  if [ -n "$status_cmd" ]; then cron "$status_cmd"; fi
)

# At a terminal: tmux screen captures of the same night.
mkdir "$work/tty" && night "$work/tty/night"
tmux new-session -d -s capture -x 120 -y 32 "bash --norc --noprofile"
tmux send-keys -t capture "cd $checkout && . .venv/bin/activate && export PYTHONPATH=$checkout && cd $work/tty && PS1='$ ' && clear" Enter
sleep 1
tmux send-keys -t capture "$run" Enter
wait_for() { for _ in $(seq 1500); do tmux capture-pane -p -t capture | grep -q "$1" && return; sleep 0.2; done; }
trim() { sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'; }
wait_for "done night/clip1.mp4"; sleep 2
mid=$(tmux capture-pane -p -t capture)
wait_for "finished:"; sleep 1
end=$(tmux capture-pane -p -t capture)
{
  echo "# A night of three videos (tiny model, 12 frames each), as a new user sees it; made by"
  echo "# docs/capture-terminal.sh at $(git -C "$checkout" rev-parse --short HEAD)"
  echo
  echo "## Under cron: sh, a bare environment (HOME, LOGNAME, SHELL, PATH), stdin closed, no TTY, output piped"
  echo
  printf '%s\n' "$cron_part" | trim
  echo
  echo
  echo "## At a terminal (tmux capture-pane, 120 columns): mid-run, after the first video"
  echo
  printf '%s\n' "$mid" | trim
  echo
  echo "## At a terminal: at the end"
  echo
  printf '%s\n' "$end" | trim
} > "$out"
