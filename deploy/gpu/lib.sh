# Helpers shared by the device scripts (check.sh, cpu_bench.sh, overload.sh); sourced, not run.
# Expects $OUT (results) and the repository root as the working directory.

B="$PWD/.gpucheck"
# Unpacks the binaries deploy/gpu/prepare.sh packed, once.
unpack() {
    [ -x "$B/kiln" ] || xz -dc .gpupack/gpucheck.tar.xz | tar -xf -
    [ -x "$B/kiln-loadtest" ] || xz -dc .gpupack/loadtest.tar.xz | tar -xf -
    export LD_LIBRARY_PATH="$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export RUST_LOG="${RUST_LOG:-warn}"
}

# Installs the Vulkan loader and GL dispatch libraries prepare.sh downloaded (NVIDIA's ICD comes
# with the machine's driver but needs them) and points the loader at the driver's ICD.
vulkan_setup() {
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && ! ls /usr/share/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    fi
}

UP_PID=
# Starts `kiln up --workers 1` on CPUs $1 and waits until it prints how to call it.
# Arguments: cpus, models dir, MODEL:VERSION, log name, extra kiln-up flags...
up() {
    local cpus=$1 models=$2 deploy=$3 log="$OUT/up-$4.log"; shift 4
    taskset -c "$cpus" "$B/kiln" up --workers 1 --models "$models" --deploy "$deploy" "$@" > "$log" 2>&1 &
    UP_PID=$!
    for _ in $(seq 240); do
        grep -q '^Call ' "$log" && return 0
        kill -0 $UP_PID 2>/dev/null || { echo "kiln up exited:"; tail -5 "$log"; return 1; }
        sleep 0.5
    done
    echo "kiln up not ready after 120 s"; return 1
}
down() { kill -INT $UP_PID 2>/dev/null; wait $UP_PID 2>/dev/null; }
# The worker's Triton-named and Kiln counters, to file $1.
metrics() { curl -s 127.0.0.1:9101/metrics | grep -E '^(nv_inference|kiln_inference)' > "$1"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU time of process $1 so far (user + system), in clock ticks (getconf CLK_TCK per second).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Runs "$@" and writes to file $1 how busy process $2 kept the CPUs it may use meanwhile:
# "CPUS CPU_SECONDS WALL_SECONDS" (the share busy is CPU_SECONDS / WALL_SECONDS / CPUS).
cpu_during() {
    local file=$1 pid=$2; shift 2
    local t0 w0 cpus
    cpus=$(awk '/Cpus_allowed_list/ {print $2}' "/proc/$pid/status" | tr ',' '\n' |
        awk -F- '{n += ($2 == "" ? 1 : $2 - $1 + 1)} END {print n}')
    t0=$(ticks "$pid"); w0=$(date +%s.%N)
    "$@"
    awk -v c="$cpus" -v t="$(( $(ticks "$pid") - t0 ))" -v hz="$(getconf CLK_TCK)" \
        -v w0="$w0" -v w1="$(date +%s.%N)" 'BEGIN { printf "%d %.2f %.3f\n", c, t / hz, w1 - w0 }' > "$file"
}
