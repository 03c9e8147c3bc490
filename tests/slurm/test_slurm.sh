#!/usr/bin/env bash
# The workflow under SLURM, for real: a one-node SLURM cluster on this machine (tests/slurm/cluster.sh), an MLflow
# tracking server on 127.0.0.1, then
#   1. a trivial two-rule Snakefile under `snakemake --executor slurm` (mechanics: submission, status polling
#      through sacct/slurmdbd, account and partition passed explicitly);
#   2. the repository's tiny end-to-end config with profiles/slurm unchanged; one `train` job is cancelled
#      with scancel mid-run, at a point the test controls: LPNTK_TEST_HOLD (test only, lpntk.stages.common.hold_point)
#      makes the first train job wait right after opening its MLflow run, and kill_one.py cancels it there; its run
#      must end KILLED or FAILED and the profile's `retries` must still bring the workflow to completion;
#   3. checks (tests/slurm/check_run.py): outputs, sacct states, MLflow runs on the server, no SQLite store.
#
#   bash tests/slurm/test_slurm.sh          # as root (apt-get installs slurm-wlm, slurmdbd, munge, mariadb)
#
# Uses the Python environment on PATH (or $PYTHON) with snakemake and this checkout's dependencies; installs
# snakemake-executor-plugin-slurm there if it is missing. The checkout's code is used (PYTHONPATH).
# Environment: LPNTK_SLURM_KEEP=1 keeps the cluster, the server and the temp dir for inspection;
# LPNTK_SLURM_JOBS (default 4) is --jobs; LPNTK_SLURM_STATE is the cluster's state dir.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/tests/slurm"
PYTHON="${PYTHON:-$(command -v python3)}"
JOBS="${LPNTK_SLURM_JOBS:-4}"
KEEP="${LPNTK_SLURM_KEEP:-0}"
TMP="$(mktemp -d /tmp/lpntk-slurm-test.XXXXXX)"
chmod 755 "$TMP"
MLFLOW_PID="" SNAKEMAKE_PID="" KILLER_PID=""
T_START=$SECONDS
declare -a TIMINGS=()

say() { printf '\n[test_slurm %(%H:%M:%S)T] %s\n' -1 "$*"; }
phase_start() {
    PHASE="$1"
    T_PHASE=$SECONDS
    say "== $PHASE"
}
phase_end() { TIMINGS+=("$(printf '%-34s %4ds' "$PHASE" $((SECONDS - T_PHASE)))"); }

teardown() {
    local rc=$?
    set +e
    [ -n "$KILLER_PID" ] && kill "$KILLER_PID" 2>/dev/null
    if [ -n "$SNAKEMAKE_PID" ] && kill -0 "$SNAKEMAKE_PID" 2>/dev/null; then
        # like Ctrl-C: snakemake cancels its SLURM jobs (scancel) and exits; TERM, then KILL, if it lingers
        kill -INT "$SNAKEMAKE_PID"
        for sig in TERM KILL; do
            for ((i = 0; i < 30; i++)); do
                kill -0 "$SNAKEMAKE_PID" 2>/dev/null || break 2
                sleep 1
            done
            kill -"$sig" "$SNAKEMAKE_PID" 2>/dev/null
        done
    fi
    if [ "$KEEP" = 1 ]; then
        say "LPNTK_SLURM_KEEP=1: left running: cluster ($(bash "$HERE/cluster.sh" env)), MLflow server (pid \
$MLFLOW_PID, ${MLFLOW_TRACKING_URI:-}), files in $TMP"
    else
        T_PHASE=$SECONDS PHASE="teardown"
        # the server runs in its own session (setsid): its process group is ours to end
        if [ -n "$MLFLOW_PID" ]; then
            kill -TERM -- "-$MLFLOW_PID" 2>/dev/null
            # under load it takes a while to stop its uvicorn worker: wait, then make sure
            for ((i = 0; i < 60; i++)); do
                kill -0 "$MLFLOW_PID" 2>/dev/null || break
                sleep 1
            done
            kill -KILL -- "-$MLFLOW_PID" 2>/dev/null
        fi
        if [ $rc -ne 0 ] && [ -d "$TMP" ]; then
            # keep the evidence: the accounting and the daemons' logs go with the cluster, so copy them first
            sacct -a --starttime now-1days -o JobID,State,ExitCode,Submit,Start,End,Elapsed,Comment%60 \
                >"$TMP/sacct.txt" 2>&1
            cp -r "${LPNTK_SLURM_STATE:-/tmp/lpntk-slurm}/log" "$TMP/cluster-logs" 2>/dev/null
        fi
        bash "$HERE/cluster.sh" down
        if [ $rc -eq 0 ]; then rm -rf "$TMP"; else say "kept for inspection: $TMP"; fi
        phase_end
    fi
    say "timings"
    printf '  %s\n' "${TIMINGS[@]}"
    printf '  %-34s %4ds\n' "total" $((SECONDS - T_START))
    if [ $rc -eq 0 ]; then say "PASSED"; else say "FAILED (exit $rc)"; fi
    exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" -eq 0 ] || {
    echo "test_slurm.sh: needs root (it installs and runs a SLURM cluster)" >&2
    exit 1
}

# ---- 0. Python environment ------------------------------------------------------------------------------
phase_start "plugin"
"$PYTHON" -c 'import snakemake, mlflow, torch' || {
    echo "test_slurm.sh: $PYTHON lacks snakemake / mlflow / torch: activate the project's environment" >&2
    exit 1
}
if ! "$PYTHON" -c 'import snakemake_executor_plugin_slurm' 2>/dev/null; then
    "$PYTHON" -m pip install -q "snakemake-executor-plugin-slurm>=2.7.1"
fi
"$PYTHON" -c 'from importlib.metadata import version as v
for p in ("snakemake", "snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep", "mlflow"):
    print(f"{p} {v(p)}")'
phase_end

# ---- 1. MLflow server (started first: it takes a while to import, and comes up while the cluster does) ----
phase_start "mlflow server start"
MLFLOW_DIR="$TMP/mlflow"
mkdir -p "$MLFLOW_DIR/artifacts"
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The store is a SQLite file local to the server; jobs only talk HTTP. --artifacts-destination with the
# default --serve-artifacts: experiments get artifact_location mlflow-artifacts:/..., so a job on any node
# uploads its artifacts through the server instead of writing into a path that exists only on this host.
setsid "$PYTHON" -m mlflow server --backend-store-uri "sqlite:///$MLFLOW_DIR/mlflow.db" \
    --artifacts-destination "$MLFLOW_DIR/artifacts" --serve-artifacts \
    --host 127.0.0.1 --port "$PORT" --workers 1 >"$MLFLOW_DIR/server.log" 2>&1 </dev/null &
MLFLOW_PID=$!
export MLFLOW_TRACKING_URI="http://127.0.0.1:$PORT"
phase_end

# ---- 2. cluster -----------------------------------------------------------------------------------------
phase_start "cluster up (install if missing)"
bash "$HERE/cluster.sh" up
# The clients find the cluster through /etc/slurm/slurm.conf (a link cluster.sh made), as on a real cluster.
unset SLURM_CONF
sinfo -V
sinfo
phase_end

phase_start "mlflow server ready"
"$PYTHON" - "$MLFLOW_TRACKING_URI/health" "$MLFLOW_PID" <<'EOF' || {
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
for _ in range(360):
    try:
        print("health:", urllib.request.urlopen(url, timeout=2).read().decode())
        sys.exit(0)
    except OSError:
        os.kill(pid, 0)  # the server died: ProcessLookupError
        time.sleep(0.5)
sys.exit("the MLflow server did not answer in 180 s")
EOF
    cat "$MLFLOW_DIR/server.log"
    exit 1
}
phase_end

# Everything a job needs comes through the environment: the plugin submits with sbatch --export=ALL.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
# MLflow 3.17's telemetry thread sets and unsets _MLFLOW_TELEMETRY_SESSION_ID in os.environ while the client's
# requests iterate os.environ (proxy lookup): a job then fails at random with KeyError '_MLFLOW_TELEMETRY_SESSION_ID'
# (seen here twice under load, once on pruning_table, once on summary). Compute nodes have no internet anyway.
export MLFLOW_DISABLE_TELEMETRY=true
SNAKEMAKE=("$PYTHON" -m snakemake)
# Faster status polls than the plugin's default 40 s (fine on a test cluster, not on a shared one).
POLL=(--slurm-init-seconds-before-status-checks 5 --seconds-between-status-checks 5)

# ---- 3. trivial workflow --------------------------------------------------------------------------------
phase_start "trivial Snakefile (4 jobs)"
TRIV="$TMP/trivial"
mkdir -p "$TRIV"
cat >"$TRIV/Snakefile" <<'EOF'
rule all:
    input:
        expand("b{i}.txt", i=[1, 2]),


rule a:
    output:
        "a{i}.txt",
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        "sleep 2; echo $SLURM_JOB_ID $(hostname) > {output}"


rule b:
    input:
        "a{i}.txt",
    output:
        "b{i}.txt",
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        "cat {input} > {output}; echo $SLURM_JOB_ID >> {output}"
EOF
(cd "$TRIV" && "${SNAKEMAKE[@]}" --executor slurm --jobs "$JOBS" "${POLL[@]}" --retries 0 \
    --default-resources slurm_account=lpntk slurm_partition=debug) >"$TRIV/run.log" 2>&1 || {
    tail -50 "$TRIV/run.log"
    exit 1
}
for i in 1 2; do [ -s "$TRIV/b$i.txt" ] || {
    echo "missing $TRIV/b$i.txt"
    exit 1
}; done
uuid=$(grep -oP 'SLURM run ID: \K\S+' "$TRIV/run.log")
sacct -X --name "$uuid" -o JobID,State,Account,Partition,AllocCPUS,ReqMem,Elapsed,Comment%30
n_ok=$(sacct -X -n --parsable2 --name "$uuid" -o State | grep -c '^COMPLETED$' || true)
[ "$n_ok" -eq 4 ] || {
    echo "expected 4 COMPLETED jobs, sacct says $n_ok"
    exit 1
}
[ "$(sacct -X -n --parsable2 --name "$uuid" -o Account | sort -u)" = lpntk ] || {
    echo "jobs did not run under account lpntk"
    exit 1
}
phase_end

# ---- 4+5. tiny end-to-end config, one train job cancelled mid-run -----------------------------------------
phase_start "tiny workflow under SLURM (+ scancel)"
WORK="$TMP/work"
mkdir -p "$WORK"
SM_ARGS=(--snakefile "$REPO/Snakefile" --directory "$WORK" --configfile "$REPO/.test/config/config.yaml"
    --workflow-profile "$REPO/profiles/slurm")
# the first train job waits at its hold point (its MLflow run open) until kill_one.py cancels it there
HOLD="$TMP/hold.json"
"$PYTHON" "$HERE/kill_one.py" --rule train --hold "$HOLD" --tracking-uri "$MLFLOW_TRACKING_URI" \
    --experiment lpntk-tiny --out "$TMP/killed.json" --timeout 600 &
KILLER_PID=$!
LPNTK_TEST_HOLD="$HOLD" LPNTK_TEST_HOLD_RULE=train \
    "${SNAKEMAKE[@]}" "${SM_ARGS[@]}" --jobs "$JOBS" "${POLL[@]}" >"$TMP/workflow.log" 2>&1 &
SNAKEMAKE_PID=$!
rc=0
wait "$SNAKEMAKE_PID" || rc=$?
SNAKEMAKE_PID=""
kill "$KILLER_PID" 2>/dev/null || true # still polling only if it never found a job to cancel
wait "$KILLER_PID" || true
KILLER_PID=""
touch "$HOLD.release" # nothing may still wait there
[ -s "$HOLD" ] && echo "hold point taken by: $(cat "$HOLD")"
[ -s "$TMP/killed.json" ] || echo '{"error": "the workflow ended before a train job could be cancelled"}' >"$TMP/killed.json"
grep -E 'SLURM run ID|SLURM account|has been submitted|Trying to restart|Error in rule|Finished jobid|steps \(100%\)' \
    "$TMP/workflow.log" | tail -60 || true
# a job that failed and was retried is still worth reading: its error and log, as snakemake printed them
awk '/^Error in rule/ {n = 40} n-- > 0' "$TMP/workflow.log"
if [ $rc -ne 0 ]; then
    tail -80 "$TMP/workflow.log"
    echo "the workflow failed (exit $rc)"
    exit 1
fi
phase_end

phase_start "checks"
"${SNAKEMAKE[@]}" "${SM_ARGS[@]}" -n >"$TMP/dryrun.log" 2>&1
grep -q "Nothing to be done" "$TMP/dryrun.log" || {
    cat "$TMP/dryrun.log"
    echo "a dry run after the workflow still has jobs to do"
    exit 1
}
"${SNAKEMAKE[@]}" "${SM_ARGS[@]}" --summary 2>/dev/null | sed -n '/^output_file\t/,$p' >"$TMP/summary.tsv"
"$PYTHON" "$HERE/check_run.py" --workdir "$WORK" --tracking-uri "$MLFLOW_TRACKING_URI" --experiment lpntk-tiny \
    --artifacts-dir "$MLFLOW_DIR/artifacts" --summary "$TMP/summary.tsv" --killed "$TMP/killed.json" \
    --run-uuid "$(grep -oP 'SLURM run ID: \K\S+' "$TMP/workflow.log")"
phase_end
