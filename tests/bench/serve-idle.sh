#!/usr/bin/env bash
# Idle memory and CPU of `offsite serve` (scheduler + admin page), and the peak of one login (Argon2id).
# Usage: bash tests/bench/serve-idle.sh   (builds the release binary first; needs curl)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p offsite
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/offsite
d=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$d"' EXIT
mkdir -p "$d/share" && echo hello > "$d/share/a.txt"
"$bin" init --config "$d/offsite.toml" --share docs="$d/share" >/dev/null 2>&1
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s|^listen = .*|listen = \"127.0.0.1:$port\"|" "$d/offsite.toml"
"$bin" serve --config "$d/offsite.toml" 2>"$d/serve.log" &
pid=$!
sleep 3
kib() { awk -v k="$1" '$1==k":" {print $2}' "/proc/$pid/status"; }
echo "idle RSS after start:        $(kib VmRSS) KiB"
t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
sleep 60
t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
echo "CPU while idle for 60 s:     $((t1 - t0)) ticks ($(getconf CLK_TCK)/s)"
code=$(grep -o 'setup code [a-z0-9]*' "$d/serve.log" | awk '{print $3}')
curl -sk -o /dev/null -H 'content-type: application/json' \
  -d "{\"code\":\"$code\",\"password\":\"a long enough password\"}" "https://127.0.0.1:$port/api/setup"
curl -sk -o /dev/null -H 'content-type: application/json' \
  -d '{"password":"a long enough password"}' "https://127.0.0.1:$port/api/login"
sleep 2
echo "peak RSS (setup + a login):  $(kib VmHWM) KiB"
echo "RSS after the login:         $(kib VmRSS) KiB"
