#!/bin/sh
# `make run` until the TUI lands: use the running daemon, or start one for
# this terminal, and follow the room. Ctrl-C stops what this script started.
set -eu
bin=$1
if "$bin/p2pchat" status >/dev/null 2>&1; then
    echo "using the running p2pchatd ($("$bin/p2pchat" status --json | sed 's/.*"socket":"\([^"]*\)".*/\1/'))"
else
    "$bin/p2pchatd" &
    daemon=$!
    trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null' EXIT INT TERM
    i=0
    until "$bin/p2pchat" status >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -lt 100 ] || { echo "p2pchatd did not start" >&2; exit 1; }
        kill -0 "$daemon" 2>/dev/null || { echo "p2pchatd exited" >&2; exit 1; }
        sleep 0.05
    done
fi
echo "type in another terminal: $bin/p2pchat say hello"
"$bin/p2pchat" tail -n 20 -f
