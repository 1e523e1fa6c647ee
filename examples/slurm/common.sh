# Sourced by the sbatch scripts beside it: credentials, programs, and waiting for servers.
#
# Credentials: set TENSORWIRE_AUTH_DIR to a folder made by
# deploy/kubernetes/make-auth-secret.sh (token, server-name, tls.crt, tls.key, ca.crt) on a
# filesystem every node sees, or export the TENSORWIRE_* variables yourself before sbatch.
# Servers whose node is not "localhost" listen beyond loopback and refuse to start without
# a token over TLS (or mutual TLS).

if [ -n "${TENSORWIRE_AUTH_DIR:-}" ]; then
    TENSORWIRE_CLUSTER_TOKEN=$(cat "$TENSORWIRE_AUTH_DIR/token")
    TENSORWIRE_TLS_SERVER_NAME=$(cat "$TENSORWIRE_AUTH_DIR/server-name")
    TENSORWIRE_TLS_CERT=$TENSORWIRE_AUTH_DIR/tls.crt
    TENSORWIRE_TLS_KEY=$TENSORWIRE_AUTH_DIR/tls.key
    TENSORWIRE_TLS_ROOT_CA=$TENSORWIRE_AUTH_DIR/ca.crt
    export TENSORWIRE_CLUSTER_TOKEN TENSORWIRE_TLS_SERVER_NAME TENSORWIRE_TLS_CERT \
        TENSORWIRE_TLS_KEY TENSORWIRE_TLS_ROOT_CA
fi

# The installed tensorwire command and the Python that has tensorwire; the examples of the
# checkout sbatch was run from (sbatch runs a copy of the script, not the file itself).
TENSORWIRE=${TENSORWIRE:-tensorwire}
PYTHON=${PYTHON:-python3}
TENSORWIRE_EXAMPLES=${TENSORWIRE_EXAMPLES:-$SLURM_SUBMIT_DIR/examples}
# The job's first node: where the batch script runs, and where task 0 of a step started
# with --relative=0 runs.
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# Each task's output, for wait_until_serving (on the submit directory's filesystem, which
# the nodes share).
LOGS=${TENSORWIRE_LOGS:-$SLURM_SUBMIT_DIR/tensorwire-$SLURM_JOB_ID}
mkdir -p "$LOGS"

# wait_until_serving SECONDS PREFIX COUNT: wait until COUNT task logs PREFIX-<task>.out
# hold the ready line every tensorwire server prints; fail after SECONDS.
wait_until_serving() {
    local deadline=$((SECONDS + $1)) prefix=$2 count=$3 ready
    while :; do
        # grep fails while no log exists yet: not an error under set -e -o pipefail.
        ready=$({ grep -l "^tensorwire .* serving" "$prefix"-*.out 2>/dev/null || true; } | wc -l)
        [ "$ready" -ge "$count" ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "only $ready of $count tasks were serving after $1 s; see $prefix-*.out" >&2
            return 1
        fi
        sleep 0.2
    done
}

# stop_steps NAME...: SIGTERM the tasks of this job's steps of those names (srun
# --job-name), which then stop cleanly and exit 0, and wait for the sruns. (A signal to
# srun itself makes it kill its tasks with SIGKILL.)
stop_steps() {
    local name step
    for name in "$@"; do
        for step in $(squeue --steps --jobs="$SLURM_JOB_ID" --noheader --format="%i %j" |
            awk -v name="$name" '$2 == name {print $1}'); do
            scancel --signal=TERM "$step" || true
        done
    done
    wait
}
