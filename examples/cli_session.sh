#!/usr/bin/env bash
# A session with the `msa` command line: init, ingest a folder, recall, ask, ls, forget, stats.
#
# It creates a small folder of notes, remembers it in a new memory space on the embedded
# default model (offline), queries it and deletes one file's memory. Each command loads the
# model (a few seconds each on a CPU).
#
# Run:
#
#     bash examples/cli_session.sh           # in a temporary folder, removed at the end
#     bash examples/cli_session.sh ./work    # in ./work (notes/ and memory/ are kept)
set -euo pipefail

if [[ $# -ge 1 ]]; then
    work="$1"
    mkdir -p "$work"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
mem="$work/memory"
notes="$work/notes"
mkdir -p "$notes/trips"

cat > "$notes/cat.md" <<'EOF'
# Ada
Ada is Dana's grey cat. She is twelve and eats only fish-based food.
EOF
cat > "$notes/deploy.txt" <<'EOF'
Staging deploys go to host vrai-thorn-7; production deploys need two approvals.
EOF
cat > "$notes/trips/porto.md" <<'EOF'
# Porto trip
The Porto trip is booked for the 3rd of October, train at 08:12 from Santa Apolonia.
EOF

step() {  # echo a command (quoted, as you would type it), then run it
    printf '\n$'; printf ' %q' "$@"; printf '\n'
    "$@"
}

step msa init "$mem"
step msa ingest "$notes" --path "$mem" --meta project=demo
step msa recall "Which host do staging deploys go to?" --path "$mem" -k 2
step msa ask "What does the cat eat?" --path "$mem" -k 1 --max-tokens 16
step msa ls --path "$mem"
step msa forget --where "source=$notes/deploy.txt" --path "$mem" --yes
step msa stats --path "$mem"
