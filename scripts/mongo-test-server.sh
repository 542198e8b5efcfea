#!/usr/bin/env bash
# The MongoDB-compatible test server of orchestrator-mongo's tests:
# nx-27017 (PyPI, MIT), a MongoDB wire-protocol server backed by SQLite,
# installed into the project's .venv/ and run on a free loopback port.
#
#   scripts/mongo-test-server.sh install
#       Creates .venv/ and installs the pinned packages (quiet; a no-op when
#       they are already there).
#   scripts/mongo-test-server.sh start [--name NAME] [--port PORT]
#       Installs if needed, starts instance NAME (default: main) on PORT (default:
#       a free one), waits until it answers a ping, and prints its URI,
#       mongodb://127.0.0.1:PORT. Its data (one SQLite file per database),
#       PID file and log live in .test-services/mongo/NAME/; starting an
#       instance whose directory exists reuses its data (that is how the
#       outage test restarts a killed server on the same files).
#   scripts/mongo-test-server.sh stop [--name NAME] [--keep]
#       Stops the instance by its PID (TERM, then KILL) and removes its
#       directory unless --keep.
#   scripts/mongo-test-server.sh uri [--name NAME]
#       Prints the URI of a running instance.
#   scripts/mongo-test-server.sh pid [--name NAME]
#       Prints the PID of a running instance.
#
# Every instance has its own --pid-file and --log-file: without them
# nx-27017 writes fixed files under /tmp and a second instance refuses to
# start.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
services="$root/.test-services/mongo"
# Known good pins (see the README's MongoDB section).
packages=(nx-27017==0.8.1 neosqlite==1.17.2 pymongo==4.20.0 dnspython==2.9.2)

die() {
    echo "mongo-test-server: $*" >&2
    exit 1
}

install() {
    local stamp="$venv/.orchestrator-mongo-test-server"
    if [[ -x "$venv/bin/nx-27017" && -f "$stamp" && "$(cat "$stamp")" == "${packages[*]}" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is needed to install nx-27017"
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv" || die "could not create $venv (is python3-venv installed?)"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" \
        || die "could not install ${packages[*]}"
    echo "${packages[*]}" >"$stamp"
}

name=main
port=
keep=0
parse() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --name) name="${2:?--name needs a value}"; shift 2 ;;
        --port) port="${2:?--port needs a value}"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) die "unknown argument $1" ;;
        esac
    done
    [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || die "instance names are letters, digits, - and _"
    dir="$services/$name"
}

running_pid() {
    local pid
    pid="$(cat "$dir/pid" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

free_port() {
    "$venv/bin/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Waits until the server on $1 answers a ping, for at most 30 s.
wait_ready() {
    "$venv/bin/python" - "$1" <<'EOF'
import sys, time
import pymongo

uri = f"mongodb://127.0.0.1:{sys.argv[1]}/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
deadline = time.monotonic() + 30
while True:
    try:
        pymongo.MongoClient(uri).admin.command("ping")
        sys.exit(0)
    except Exception as e:  # not up yet
        if time.monotonic() > deadline:
            print(f"no answer on port {sys.argv[1]}: {e}", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.1)
EOF
}

start() {
    install
    mkdir -p "$dir/data"
    if pid="$(running_pid)"; then
        die "instance $name is already running (PID $pid, $(cat "$dir/uri" 2>/dev/null))"
    fi
    # A PID file left by a killed server would make nx-27017 refuse to start
    # if its PID were reused.
    rm -f "$dir/pid"
    local attempt p
    for attempt in 1 2 3; do
        p="${port:-$(free_port)}"
        # setsid: the server is not in the caller's process group, so a
        # signal to the test run's group does not reach it.
        setsid "$venv/bin/nx-27017" --host 127.0.0.1 --port "$p" --data-dir "$dir/data" \
            --pid-file "$dir/pid" --log-file "$dir/log" >>"$dir/stdout" 2>&1 </dev/null &
        if wait_ready "$p" 2>>"$dir/stdout"; then
            echo "mongodb://127.0.0.1:$p" >"$dir/uri"
            echo "mongodb://127.0.0.1:$p"
            return 0
        fi
        # Lost a race for the port, or failed to start: clean up, try again.
        if pid="$(running_pid)"; then kill -KILL "$pid" 2>/dev/null || true; fi
        rm -f "$dir/pid"
        [[ -n "$port" ]] && sleep 1
    done
    tail -n 20 "$dir/stdout" >&2 || true
    die "nx-27017 did not start (see $dir/stdout)"
}

stop() {
    local pid i
    if pid="$(running_pid)"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if [[ "$keep" == 0 ]]; then
        rm -rf "$dir"
    else
        rm -f "$dir/pid" "$dir/uri"
    fi
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
install) install ;;
start) parse "$@"; start ;;
stop) parse "$@"; stop ;;
uri) parse "$@"; running_pid >/dev/null || die "instance $name is not running"; cat "$dir/uri" ;;
pid) parse "$@"; running_pid || die "instance $name is not running" ;;
*) die "usage: $0 install | start [--name NAME] [--port PORT] | stop [--name NAME] [--keep] | uri [--name NAME] | pid [--name NAME]" ;;
esac
