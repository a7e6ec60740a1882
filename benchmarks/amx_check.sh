#!/usr/bin/env bash
# Build llama-cpp-python for the CPU with GGML_NATIVE=ON and OFF (each with and without
# -Wl,--exclude-libs,ALL when EXCLUDE=1/0) and run the pipeline on the tiny F32 and Q8_0
# models with each build. Prints the exit status of every run (139 = segfault).
#   bash benchmarks/amx_check.sh path/to/llama_cpp_python-0.3.36.tar.gz
# Needs the project's other dependencies importable (hydra-core, gguf, ...).
set -u
sdist=$1
linker=""; [ "${EXCLUDE:-1}" = 1 ] && linker="-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL"
echo "cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); AMX flags: $(grep -o 'amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
# Offline machines (like the GPU image) build without isolation when scikit-build-core is there.
isolation=""; python3 -c "import scikit_build_core" 2>/dev/null && isolation=--no-build-isolation
for mode in ON OFF; do
  work=$(mktemp -d)
  CMAKE_ARGS="-DGGML_NATIVE=$mode $linker" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    python3 -m pip wheel -q --no-deps $isolation -w "$work/whl" "$sdist" > "$work/build.log" 2>&1 \
    || { echo "GGML_NATIVE=$mode: build failed"; tail -5 "$work/build.log"; continue; }
  python3 -m pip install -q --no-deps --no-index --target "$work/site" "$work"/whl/*.whl
  for quantized in true false; do
    PYTHONPATH="$work/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 300 python3 -m pipeline \
      video=data/sample.mp4 model=tiny model.quantized=$quantized model.dir="$work/tiny" \
      output_dir="$work/out-$quantized" hydra.run.dir="$work/hydra-$quantized" > "$work/run-$quantized.log" 2>&1
    echo "GGML_NATIVE=$mode ${linker:+exclude-libs }quantized=$quantized: rc $?"
  done
done
