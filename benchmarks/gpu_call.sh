#!/usr/bin/env bash
# One device call: build llama-cpp-python with CUDA, then run the measurement plan PLAN
# (callN below) within the call's time, writing raw records under $OUT.
# Usage (device tool, carry [".gpu"]): bash benchmarks/gpu_call.sh call1
set -uo pipefail
plan=${1:?plan}
started=$(date +%s)
left() { echo $(( ${CALL_SECONDS:-570} - ($(date +%s) - started) )); }
# PATCH=NAME builds llama.cpp with benchmarks/patches/NAME.patch applied (to the carried sdist).
if [ -n "${PATCH:-}" ]; then
  rm -rf /tmp/sdist && mkdir -p /tmp/sdist && tar xzf .gpu/llama_cpp_python-*.tar.gz -C /tmp/sdist || exit 1
  patch -d /tmp/sdist/llama_cpp_python-*/vendor/llama.cpp -p1 < "benchmarks/patches/$PATCH.patch" || exit 1
  tarball=$(basename .gpu/llama_cpp_python-*.tar.gz)
  tar czf ".gpu/$tarball" -C /tmp/sdist "$(basename /tmp/sdist/llama_cpp_python-*)" || exit 1
  echo "patched llama.cpp with $PATCH"
fi
# ENGINE_PATCH=NAME applies benchmarks/patches/NAME.diff to this copy of the project (code measured here
# before it lands).
if [ -n "${ENGINE_PATCH:-}" ]; then
  git apply "benchmarks/patches/$ENGINE_PATCH.diff" || patch -p1 < "benchmarks/patches/$ENGINE_PATCH.diff" || exit 1
  echo "applied $ENGINE_PATCH"
fi
source .gpu/gpu_build.sh || exit 1
export PYTHONUNBUFFERED=1 VIDEO_CAPTION_CACHE=/tmp/vcache HF_HUB_OFFLINE=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$OUT/gpu.txt"
echo "build done after $(( $(date +%s) - started )) s" | tee -a "$OUT/gpu.txt"
# T=SECONDS bench ...: stop that benchmark after SECONDS (default: the time left)
bench() { timeout "${T:-$(left)}" python3 benchmarks/gpu_throughput.py --shape "$1" --model-dir /tmp/models --out "$OUT" --budget-s "$(left)" "${@:2}" 2>&1 | tee -a "$OUT/bench.log"; }
case "$plan" in
  call1)
    python3 benchmarks/reference_parity.py --device cuda --n-gpu-layers -1 2>&1 | grep -v "Warning\|Writing\|Loading" | tee "$OUT/parity-gpu.txt"
    bench mistral7b --probe --seed seed --seed-frames 6 --seed3-frames 3 --frames 64 \
      --cases "p=1;p=1,layout=llamacpp;p=3,n=48;p=3,layout=llamacpp,n=48" \
      --peer-batches 16,64,128 --peer-prompts 1 --peer-frames 64
    ;;
  call2)
    bench mistral7b --seed seed --seed-frames 6 --seed3-frames 3 --frames 64 \
      --cases "p=1;p=1,layout=llamacpp;p=3,n=48;p=3,layout=llamacpp,n=48" \
      --peer-batches 16,64,128 --peer-prompts 1 --peer-frames 64
    bench mistral7b --seed "" --cases "" --peer-batches 8,32 --peer-prompts 3 --peer-frames 32
    bench mistral7b-f16 --seed "" --probe --cases "p=1"
    ;;
  call4)  # session 5, first call (timed out in the Q5_K_M 3-prompt case): Q5_K_M with the one-pass
           # prefill, then F16 and Q8_0 text weights (the latter two were a second call on the warm machine)
    bench mistral7b --seed "" --probe --frames 64 --cases "p=1;p=3,n=48"
    bench mistral7b-f16 --seed "" --probe --frames 64 --cases "p=1;p=3,n=48"
    bench mistral7b-q8 --seed "" --probe --frames 64 --cases "p=1;p=3,n=48"
    ;;
  call5)  # session 5, last call: model hashing out of the timed window; why 3 prompts stall
    bench mistral7b --seed "" --frames 64 --cases "p=1"
    for case in "p=3,n=24" "p=3,n=24,lanes=1" "p=3,n=24,kv=unified"; do
      T=75 bench mistral7b --seed "" --stall-s 30 --cases "$case"
    done
    ;;
  call8)  # session 6, first call: F16 text weights (the pipeline's own copy of the Q5_K_M file,
          # model.text_type=f16) against the Q5_K_M file as it is, 1 and 3 prompts, and 32 in flight
    bench mistral7b --seed "" --frames 64 \
      --cases "p=1,w=f16;p=3,n=32,w=f16;p=1,w=keep;p=3,n=32,w=keep;p=3,n=32,par=32,w=f16;p=1,par=32,w=f16"
    ;;
  call9)  # session 6, second call (warm machine): the defaults (model.text_type=auto) vs the seed and
          # the peer's batch sweep in one run; then 3 prompts with 2 lanes under two CUDA switches
    bench mistral7b --seed seed --seed-frames 6 --seed3-frames 3 --frames 64 --cases "p=1;p=3,n=32" \
      --peer-batches 4,8,16,32,64,128 --peer-prompts 1,3 --peer-frames 16
    for var in GGML_CUDA_PDL=0 GGML_CUDA_DISABLE_GRAPHS=1; do
      (export "$var"; T=60 bench mistral7b --seed "" --stall-s 25 --force-lanes --cases "p=3,n=24,lanes=2")
    done
    ;;
  call10)  # session 6, third call (warm machine): the Yi-34B shape vs the seed and the peer
    rm -f /tmp/models/random-llava-mistral7b*  # room on the 64 GB disk for the 24 GB model
    bench yi34b --seed seed --seed-frames 3 --seed3-frames 2 --frames 24 --cases "p=1;p=3,n=12" \
      --peer-batches 1,2,4,8 --peer-prompts 1,3 --peer-frames 4
    ;;
  call11)  # session 6, last call (fresh machine): a frame's other questions in one llama_decode
           # (the engine's default since), 1 and 3 prompts, vs the peer's 3-prompt sweep, one run
    bench mistral7b --seed "" --frames 64 --cases "p=1;p=3" \
      --peer-batches 8,16,32,64 --peer-prompts 3 --peer-frames 16
    ;;
  call12)  # session 7, first call: where one prompt's time goes now (probe of CLIP, prefill, decode),
           # with llama.cpp's and mtmd's own log lines kept, to see which attention kernels CLIP's graph gets
    python3 -c 'import logging, sys; logging.basicConfig(level=logging.DEBUG, filename=sys.argv[1], format="%(name)s %(message)s"); [logging.getLogger(n).setLevel(logging.WARNING) for n in ("urllib3", "filelock")]; sys.argv = ["gpu_throughput.py", *sys.argv[2:]]; import runpy; runpy.run_path("benchmarks/gpu_throughput.py", run_name="__main__")' \
      "$OUT/native-debug.log" --shape mistral7b --model-dir /tmp/models --out "$OUT" --budget-s "$(left)" \
      --seed "" --probe --frames 64 --cases "p=1;p=3" 2>&1 | tee -a "$OUT/bench.log"
    grep -i "flash\|FLASH_ATTN\|fallback\|f32\|clip" "$OUT/native-debug.log" | sort | uniq -c | sort -rn | head -60 > "$OUT/native-attn.txt"
    ;;
  call13)  # session 7, last call: the engine as merged this session (scheduler split by job, structured
           # answers, model identity) against the session's starting code (efab38d, put in .gpu/baseline by
           # `git archive efab38d pipeline conf benchmarks pyproject.toml`) in one run, 1 and 3 prompts;
           # then decode with and without a JSON Schema on the Mistral-7B shape
    (cd .gpu/baseline && timeout "$(left)" python3 benchmarks/gpu_throughput.py --shape mistral7b --model-dir /tmp/models \
      --out "$OUT/baseline" --budget-s "$(left)" --seed "" --frames 48 --cases "p=1;p=3" 2>&1 | sed 's/^/[efab38d] /' | tee -a "$OUT/bench.log")
    bench mistral7b --seed "" --frames 48 --cases "p=1;p=3"
    timeout "$(left)" python3 benchmarks/structured_decode.py --models mistral7b --gpu-layers -1 --threads 4 \
      --workdir /tmp/models --frames 16 --parallel 16 --repeats 2 2>&1 | tee "$OUT/structured.log"
    ;;
  call14)  # session 8: where one prompt's throughput stops growing with frames in flight, lanes and frames
           # prepared ahead (F16 weights, no code change), and 32 in flight with three prompts; the
           # defaults run first and again last, for the run-to-run spread
    bench mistral7b --seed "" --frames 64 \
      --cases "p=1;p=1,par=32;p=1,par=48,lanes=3;p=1,par=32,ahead=4;p=3;p=3,par=32;p=1"
    ;;
  call15)  # session 8, second call (fresh machine): 32 frames in flight with three prompts against 16,
           # each twice in A-B-B-A order, answers hashed (the same greedy answers?); prefill pieces
           # of 512 and 2048 rows with one prompt
    bench mistral7b --seed "" --frames 64 \
      --cases "p=3;p=3,par=32;p=1,ub=512;p=1,ub=2048;p=1;p=3,par=32;p=3"
    ;;
  call16)  # session 10: do the defaults give the same answers run to run (two lanes with one prompt,
           # against one lane), each twice, answers hashed; three prompts twice; the peer's batches that
           # fit an H100, in the same run, for the ratio on this card
    bench mistral7b --seed "" --frames 48 --cases "p=1;p=1,lanes=1;p=1;p=1,lanes=1;p=3;p=3" \
      --peer-batches 16,32,64 --peer-prompts 1,3 --peer-frames 64
    ;;
  call17)  # session 10, second call: one lane by default, and a lane that waits for the next prepared
           # frame whenever it has a free slot (the same batches every run), against the code before
           # (92322a7, put in .gpu/baseline by `git archive 92322a7 pipeline conf benchmarks pyproject.toml`:
           # two lanes with one prompt, a lane admitting only frames already prepared), interleaved;
           # answers hashed; F16 copy and the Q5_K_M file as it is
    base() { (cd .gpu/baseline && timeout "$(left)" python3 benchmarks/gpu_throughput.py --shape mistral7b \
      --model-dir /tmp/models --out "$OUT/baseline" --budget-s "$(left)" --seed "" --frames 48 "$@" 2>&1 \
      | sed 's/^/[92322a7] /' | tee -a "$OUT/bench.log"); }
    base --cases "p=1;p=1,lanes=1"
    bench mistral7b --seed "" --frames 48 --cases "p=1;p=3;p=1"
    base --cases "p=1,w=keep;p=1"
    bench mistral7b --seed "" --frames 48 --cases "p=1,w=keep;p=1"
    ;;
  call18)  # session 11: frames dealt to the lanes in turn (frame k to lane k % lanes), so that two lanes
           # batch the same frames every run; answers hashed, each two-lane case twice; one lane (the
           # default) must keep its answers; the code before (eaa1ac5, timing decides the lane, in
           # .gpu/baseline by `git archive eaa1ac5 pipeline conf benchmarks pyproject.toml`) for the speed
    base() { (cd .gpu/baseline && timeout "$(left)" python3 benchmarks/gpu_throughput.py --shape mistral7b \
      --model-dir /tmp/models --out "$OUT/baseline" --budget-s "$(left)" --seed "" --frames 48 "$@" 2>&1 \
      | sed 's/^/[eaa1ac5] /' | tee -a "$OUT/bench.log"); }
    bench mistral7b --seed "" --frames 48 --cases "p=1;p=1,lanes=2;p=1,lanes=2"
    base --cases "p=1,lanes=2;p=1,w=keep,lanes=2"
    bench mistral7b --seed "" --frames 48 --cases "p=1,w=keep;p=1,w=keep,lanes=2;p=1,w=keep,lanes=2"
    ;;
  call19)  # session 11, second call (warm machine): the Yi-34B shape (the default preset), the Q5_K_M
           # file as it is: one lane against two dealt in turn (each twice), and two by timing before
    rm -f /tmp/models/random-llava-mistral7b*  # room on the 64 GB disk for the 24 GB model
    bench yi34b --seed "" --frames 24 --cases "p=1,w=keep;p=1,w=keep,lanes=2;p=1,w=keep;p=1,w=keep,lanes=2"
    (cd .gpu/baseline && timeout "$(left)" python3 benchmarks/gpu_throughput.py --shape yi34b --model-dir /tmp/models \
      --out "$OUT/baseline" --budget-s "$(left)" --seed "" --frames 24 --cases "p=1,w=keep,lanes=2" 2>&1 \
      | sed 's/^/[eaa1ac5] /' | tee -a "$OUT/bench.log")
    ;;
  call20)  # session 11, third call: the defaults after the change (engine.lanes null: two lanes on a GPU
           # with one prompt, frames dealt in turn), run to run, against one lane and three prompts
    bench mistral7b --seed "" --frames 48 --cases "p=1;p=1,lanes=1;p=1;p=3"
    ;;
  call21)  # session 12: a CLIP encoder (its own mtmd contexts and preparing thread) per lane, against one
           # for all lanes (clipt=1: the code before), interleaved, answers hashed; three prompts (one lane)
           # with one and two; then the peer's best batches on this card (session 10: 64 with one prompt,
           # 32 with three), in the same call
    bench mistral7b --seed "" --frames 48 --cases "p=1;p=1,clipt=1;p=1;p=1,clipt=1;p=3;p=3,clipt=2"
    bench mistral7b --seed "" --cases "" --peer-batches 64 --peer-prompts 1 --peer-frames 64
    bench mistral7b --seed "" --cases "" --peer-batches 32 --peer-prompts 3 --peer-frames 64
    ;;
  call22)  # session 12, second call (warm machine): the Yi-34B shape (the default preset, Q5_K_M as it is),
           # one and three prompts, one CLIP encoder per lane against one; the peer's batches that fit, same call
    rm -f /tmp/models/random-llava-mistral7b*  # room on the 64 GB disk for the 24 GB model
    bench yi34b --seed "" --frames 24 --cases "p=1,w=keep;p=1,w=keep,clipt=1;p=3,w=keep,n=12;p=3,w=keep,n=12,clipt=2" \
      --peer-batches 4,8 --peer-prompts 1,3 --peer-frames 8
    ;;
  call23)  # session 13 (run in session 14): call 21 again (its records were lost with the session's checkout), the peer's
           # three-prompt batch left out (call 21 ran out of time there; call 24 runs it)
    bench mistral7b --seed "" --frames 48 --cases "p=1;p=1,clipt=1;p=1;p=1,clipt=1;p=3;p=3,clipt=2"
    bench mistral7b --seed "" --cases "" --peer-batches 64 --peer-prompts 1 --peer-frames 64
    ;;
  call24)  # session 13 (run in session 14), second call: on a warm machine (the build skipped) the peer's three-prompt batch 32
           # for the Mistral-7B shape first; then call 22 again (the Yi-34B shape; records lost)
    if [ "$(left)" -gt 450 ]; then
      T=150 bench mistral7b --seed "" --cases "" --peer-batches 32 --peer-prompts 3 --peer-frames 32
    fi
    rm -f /tmp/models/random-llava-mistral7b*  # room on the 64 GB disk for the 24 GB model
    bench yi34b --seed "" --frames 24 --cases "p=1,w=keep;p=1,w=keep,clipt=1;p=3,w=keep,n=12;p=3,w=keep,n=12,clipt=2" \
      --peer-batches 4,8 --peer-prompts 1,3 --peer-frames 8
    ;;
  call25)  # planned in session 14, ran in session 15 (H100): three prompts in two lanes again (they hung in session 6, one CLIP thread,
           # lanes taking frames by timing), now with frames dealt and a CLIP encoder per lane; one lane around them
    bench mistral7b --seed "" --frames 48 --cases "p=3"
    T=90 bench mistral7b --seed "" --frames 48 --stall-s 30 --force-lanes --cases "p=3,lanes=2"
    T=90 bench mistral7b --seed "" --frames 48 --stall-s 30 --force-lanes --cases "p=3,lanes=2"
    bench mistral7b --seed "" --frames 48 --cases "p=3"
    ;;
  call26)  # session 16: the Yi-34B shape (the default preset, Q5_K_M as it is) with three prompts, one lane (the default)
           # against engine.lanes=2, interleaved, a 30 s stall watchdog; then the peer's best batches while time is left
    bench yi34b --seed "" --frames 16 --stall-s 30 --cases "p=3,w=keep;p=3,w=keep,lanes=2;p=3,w=keep;p=3,w=keep,lanes=2"
    if [ "$(left)" -gt 60 ]; then
      T=$(( $(left) - 30 )) bench yi34b --seed "" --cases "" --peer-batches 8 --peer-prompts 1 --peer-frames 8
    fi
    if [ "$(left)" -gt 40 ]; then
      bench yi34b --seed "" --cases "" --peer-batches 4 --peer-prompts 3 --peer-frames 8
    fi
    ;;
  call27)  # session 16, second call: issue 27 point 3, one frame's pieces against their limits again (probe: CLIP per
           # tile, prefill by piece), then one prompt with 4 CLIP encoders against the default 2 (one per lane), interleaved
    bench mistral7b --seed "" --probe --frames 48 --cases "p=1;p=1,clipt=4;p=1;p=1,clipt=4"
    ;;
  call28)  # session 16 (not run: no machine): a frame's tiles of one arrangement in one CLIP graph (llama.cpp's LLaVA
           # graph batched: PATCH=llava-clip-batch ENGINE_PATCH=clip-batch-engine) against one graph a tile (clipb=0),
           # interleaved, one prompt and three
    bench mistral7b --seed "" --frames 32 --cases "p=1,clipb=0;p=1;p=1,clipb=0;p=1;p=3,clipb=0;p=3"
    ;;
  call29)  # session 16 (not run: no machine), with ~320 s of device time left: call28's comparison at its smallest (the Q5_K_M file as it
           # is: no F16 copy to make), one pair, 16 frames a case
    bench mistral7b --seed "" --frames 16 --cases "p=1,w=keep,clipb=0;p=1,w=keep"
    ;;
  call30)  # session 18: issue 27 point 3 on the card the issue names: the engine's pieces (probe) and its runs, one and
           # three prompts, twice each; the pieces' isolated limits on the same card (piece_limits.py); the peer's best batches
    bench mistral7b --seed "" --probe --frames 48 --cases "p=1;p=3;p=1;p=3"
    timeout "$(left)" python3 benchmarks/piece_limits.py --shape mistral7b --out "$OUT" 2>&1 | tee -a "$OUT/bench.log"
    if [ "$(left)" -gt 60 ]; then
      T=$(( $(left) - 40 )) bench mistral7b --seed "" --cases "" --peer-batches 64,128 --peer-prompts 1 --peer-frames 128
    fi
    if [ "$(left)" -gt 40 ]; then
      bench mistral7b --seed "" --cases "" --peer-batches 32,64 --peer-prompts 3 --peer-frames 64
    fi
    ;;
  call31)  # run in session 20: a 383 s build left the profile 27 s, so it ran again alone on the warm machine
           # (BENCHMARKS.md, session 20).
           # session 19: one frame's CLIP and prefill on the F16 text weights, timed alone and kernel by kernel under
           # torch.profiler (kernel_profile.py); then the engine, one and three prompts, for the answers' hashes of the
           # checkout (lanes' batch limits and the conversion's quiet output changed on the GPU path)
    timeout "$(( $(left) - 150 ))" python3 benchmarks/kernel_profile.py --model-dir /tmp/models --out "$OUT" 2>&1 | tee -a "$OUT/bench.log"
    bench mistral7b --seed "" --frames 48 --cases "p=1;p=3"
    ;;
  call31b)  # session 19, with the device time left after call31 could not start: the engine only, one and three
            # prompts, for the answers' hashes of the checkout (lanes' batch limits; the conversion's quiet output)
    bench mistral7b --seed "" --frames 48 --cases "p=1;p=3"
    ;;
  call32)  # session 21: the checkout's answers (hashes) and speed, one and three prompts (a model, mmproj or context
           # that does not start now holds llama.cpp's error lines for its own: native.held_errors, on the GPU path),
           # then the peer's best batch (64) on the same machine: issue 27's ratio measured side by side in one run
    bench mistral7b --seed "" --frames 48 --cases "p=1;p=3"
    if [ "$(left)" -gt 60 ]; then
      T=$(( $(left) - 20 )) bench mistral7b --seed "" --cases "" --peer-batches 64 --peer-prompts 1 --peer-frames 128
    fi
    ;;
  call32b)  # session 21, on the warm machine if call32 ran out of time before the peer
    bench mistral7b --seed "" --cases "" --peer-batches 64 --peer-prompts 1 --peer-frames 128
    ;;
  *) echo "unknown plan $plan"; exit 2 ;;
esac
echo "call done after $(( $(date +%s) - started )) s"
