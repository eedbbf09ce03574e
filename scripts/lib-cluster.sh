# Shell functions shared by scripts/compare, scripts/single and scripts/soak:
# system packages, the `chorus` binary, a scratch directory removed on exit
# with every server started in it, Chorus nodes as separate
# `chorus node start` processes on loopback, and CPU and memory figures of
# processes from /proc.
#
# Sourced (not run) from the repository root by a script with `set -euo
# pipefail`. After `cluster_init`, `$work` is the scratch directory and
# `pids` the servers to stop on exit.

# need_packages COMMAND:PACKAGE ...: installs the Debian packages of the
# commands that are missing when run as root, else says what is missing
# and exits.
need_packages() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
}

# chorus_binary [PATH]: prints PATH, or builds `chorus` in release mode and
# prints where it is.
chorus_binary() {
  if [ -n "${1:-}" ]; then
    echo "$1"
    return
  fi
  scripts/deps.sh >&2
  cargo build --release --locked --quiet -p chorus-node --bin chorus >&2
  echo "${CARGO_TARGET_DIR:-target}/release/chorus"
}

# cluster_init: makes the scratch directory and stops every process in
# `pids` and removes the directory on exit.
cluster_init() {
  work=$(mktemp -d)
  pids=()
  trap cluster_cleanup EXIT
}

cluster_cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# wait_http URL: until it answers (at most 60 s).
wait_http() {
  for _ in $(seq 600); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" \
      2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not answer" >&2
  exit 1
}

# start_chorus CHORUS NODES REPLICAS [NODE ARGS...]: starts NODES
# `chorus node start` processes (node1…, QUIC on 17301…, HTTP on 18301…,
# each seeded with the others, the ring built once all NODES are up) with
# REPLICAS replicas of each key and NODE ARGS added to each, and waits until
# every one is ready. The nodes share this machine's cores, so each runs
# `--shards` and `--io-threads` = cores ÷ NODES (at least 1) unless NODE
# ARGS name them. Sets `chorus_pids` (the node processes, also added to
# `pids`), `chorus_urls` (their HTTP URLs) and `chorus_targets` (the
# `--target URL` arguments of `chorus bench`).
start_chorus() {
  local chorus=$1 nodes=$2 replicas=$3 i j seeds share shares=()
  shift 3
  share=$(( $(nproc) / nodes > 0 ? $(nproc) / nodes : 1 ))
  [[ " $* " == *" --shards "* ]] || shares+=(--shards "$share")
  [[ " $* " == *" --io-threads "* ]] || shares+=(--io-threads "$share")
  chorus_pids=() chorus_urls=() chorus_targets=()
  "$chorus" cert ca --dir "$work/ca" >/dev/null
  for i in $(seq "$nodes"); do
    "$chorus" cert node --ca-dir "$work/ca" --name "node$i" --out "$work/tls$i" >/dev/null
    seeds=()
    for j in $(seq "$nodes"); do
      [ "$j" = "$i" ] || seeds+=(--seed "127.0.0.1:$((17300 + j))")
    done
    "$chorus" --log-format json node start --name "node$i" --data-dir "$work/node$i" \
      --quic-listen "127.0.0.1:$((17300 + i))" --http-listen "127.0.0.1:$((18300 + i))" \
      "${seeds[@]}" --initial-members "$nodes" --replicas "$replicas" \
      --tls-ca "$work/tls$i/ca.pem" --tls-cert "$work/tls$i/node.pem" \
      --tls-key "$work/tls$i/node.key" "${shares[@]}" "$@" >"$work/node$i.log" 2>&1 &
    pids+=($!) chorus_pids+=($!)
    chorus_urls+=("http://127.0.0.1:$((18300 + i))")
    chorus_targets+=(--target "http://127.0.0.1:$((18300 + i))")
  done
  for i in $(seq "$nodes"); do wait_http "http://127.0.0.1:$((18300 + i))/readyz"; done
}

# disk_write_bytes PID...: the bytes these processes have caused to be
# written to storage so far (write_bytes of /proc/PID/io: the block
# layer's count, logs, flushes and compactions alike).
disk_write_bytes() {
  local total=0 pid bytes
  for pid in "$@"; do
    bytes=$(awk '/^write_bytes:/ {print $2}' "/proc/$pid/io")
    total=$((total + bytes))
  done
  echo $total
}

# cpu_ticks PID...: their utime + stime together, in clock ticks.
cpu_ticks() {
  local total=0 pid fields
  for pid in "$@"; do
    read -r -a fields < <(sed 's/.*) //' "/proc/$pid/stat")
    total=$((total + fields[11] + fields[12]))
  done
  echo $total
}

# thread_ticks PID: one line per thread, "TID TICKS NAME" (utime + stime in
# clock ticks; the name from /proc/PID/task/TID/comm).
thread_ticks() {
  local task fields name
  for task in /proc/"$1"/task/*; do
    read -r -a fields < <(sed 's/.*) //' "$task/stat" 2>/dev/null) || continue
    name=$(cat "$task/comm" 2>/dev/null) || continue
    echo "${task##*/} $((fields[11] + fields[12])) ${name// /_}"
  done
}

# rss_kb PID: resident memory (VmRSS) in KiB; 0 once the process is gone.
rss_kb() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# seconds DURATION: 40s, 10m, 1h or a number of seconds, in seconds.
seconds() {
  case "$1" in
    *ms) echo "scripts: durations are whole seconds: $1" >&2; exit 2 ;;
    *s) echo "${1%s}" ;;
    *m) echo $((${1%m} * 60)) ;;
    *h) echo $((${1%h} * 3600)) ;;
    *[!0-9]*|"") echo "not a duration: $1 (e.g. 40s, 10m, 1h)" >&2; exit 2 ;;
    *) echo "$1" ;;
  esac
}

# json_field FILE EXPRESSION: a field of a `chorus bench --json` report,
# e.g. json_field r.json 'run["throughput"]'.
json_field() {
  python3 -c 'import json, sys; report = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
    "$1" "$2"
}
