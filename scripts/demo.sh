#!/usr/bin/env bash
# `make demo`: a live room on this machine alone. Starts your daemon and
# three peers that chat by themselves, all on loopback with a multicast
# group of their own (nothing reaches the LAN), attaches the TUI, and stops
# everything when you quit it.
set -euo pipefail
bin=${1:?usage: demo.sh BIN_DIR}
dir=$(mktemp -d "${TMPDIR:-/tmp}/p2pchat-demo.XXXXXX")
group="239.255.$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1)):$((RANDOM % 20000 + 30000))"
net=(--interface 127.0.0.1 --listen 127.0.0.1 --port 0 --multicast "$group")
pids=()

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

start() { # nick [--identity-of-your-own]
    local own=()
    # The bots are people of their own: each gets a key (and a data folder)
    # in the demo's folder; you keep yours.
    [ "${2:-}" = mine ] || own=(--identity "$dir/$1.identity")
    "$bin/p2pchatd" "${net[@]}" "${own[@]}" --nick "$1" --socket "$dir/$1.sock" 2>"$dir/$1.log" &
    pids+=($!)
}

wait_ready() { # nick
    for _ in $(seq 100); do
        "$bin/p2pchat" --socket "$dir/$1.sock" status >/dev/null 2>&1 && return
        sleep 0.05
    done
    echo "demo: $1 did not start; see $dir/$1.log" >&2
    exit 1
}

lines=(
    "morning all"
    "did anyone see the build go red last night?"
    "it was the flaky network test again"
    "I'll take a look after lunch"
    "coffee?"
    "the new release notes are up"
    "日本語も大丈夫 🎉"
    "brb"
    "back"
    "has anyone tried p2pchat over the VPN?"
    "works for me with --peer"
    "/me stretches"
    "/me waves"
    "lunch in 10"
)

chatter() { # nick
    local sock="$dir/$1.sock"
    while sleep $((RANDOM % 5 + 2)); do
        local line=${lines[RANDOM % ${#lines[@]}]}
        if [[ $line == "/me "* ]]; then
            "$bin/p2pchat" --socket "$sock" say --me "${line#/me }" 2>/dev/null || true
        else
            "$bin/p2pchat" --socket "$sock" say "$line" 2>/dev/null || true
        fi
    done
}

me=${USER:-you}
start "$me" mine
for bot in ada grace linus; do start "$bot"; done
wait_ready "$me"
for bot in ada grace linus; do
    wait_ready "$bot"
    chatter "$bot" &
    pids+=($!)
done
"$bin/p2pchat" --socket "$dir/$me.sock" --no-autostart
