#!/usr/bin/env bash
# Mutation testing of the formula functions with mutmut 3 (docs/mutation-testing.md).
#
#   tools/mutation.sh GROUP [GROUP ...]     # groups: scores clustering relations train difficulty kernel forgetting
#   tools/mutation.sh all                   #         pruning registry claims
#   nice -n 15 tools/mutation.sh all        # on a shared machine
#
# Each group runs in its own scratch copy of the tree ($MUTATION_ROOT/GROUP, default /tmp/lpntk-mutation/GROUP; the
# working tree is never touched): the tracked and untracked-but-not-ignored files are copied there, a [tool.mutmut]
# block is appended to the copy's pyproject.toml (the files to mutate and the group's FAST test files, -m "not slow"),
# and `mutmut run` is restricted to the group's functions. The survivors and the score are printed at the end and
# written to $MUTATION_ROOT/GROUP/report.txt. Environment: MUTMUT_CHILDREN (parallel workers, default 2),
# MUTATION_ROOT, ONLY_SURVIVORS=1 (rerun just the mutants the group's previous run left alive, e.g. after adding
# tests; its report then covers those alone). Needs mutmut >= 3.3 (`pip install mutmut`); torch is not fork-safe,
# so the workers come from a fork server.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=${MUTATION_ROOT:-/tmp/lpntk-mutation}
children=${MUTMUT_CHILDREN:-2}

# group -> "file to mutate|function globs (mutmut names)|fast test files|pytest -k expression ("" = every test)"
# The -k expressions leave out the stage tests (prepared data, kernels and training runs per test: minutes per mutant);
# the formula functions are meant to be pinned down by the unit tests around them.
fns() {  # fns MODULE NAME... -> the mutmut globs of those functions of MODULE (dotted)
  local mod=$1 f
  shift
  for f in "$@"; do printf '%s.x_%s__mutmut_* ' "$mod" "$f"; done
}
# the pruning selections' unit tests: the stage tests (cluster/prune stages, retraining, the plan, the table, own
# clusters) live in other files of tests/pruning/, which prepare data or train per test
PRUNING_UNIT="tests/pruning/test_selection_rules.py tests/pruning/test_selector_registry.py"
declare -A GROUPS_=(
  [scores]="lpntk/scores.py|lpntk.scores.*|tests/scores/test_scores.py tests/test_brute_force_references.py|not stage and not hand_written and not forgetting_run and not lpntk and not sign and not flip and not crop and not matmul and not cosine_schedule and not curve_area"
  [clustering]="lpntk/clustering.py|lpntk.clustering.*|tests/clustering/test_clustering.py $PRUNING_UNIT|"
  [relations]="lpntk/relations.py|$(fns lpntk.relations cosine upper_triangle relation_counts relation_shares official_value_counts official_value_shares redundant_mask cross_redundant_mask selfmax_larger_index_mask stratified_shares)|tests/relations/test_relations.py tests/relations/test_relation_labels.py|not stage"
  [train]="lpntk/dynamics.py|$(fns lpntk.dynamics l2_error presentation_forgetting)|tests/train/test_train.py tests/forgetting/test_event_table.py tests/test_brute_force_references.py|l2_error or hand_made or hand_written_loop_computes or event_table"
  [difficulty]="lpntk/difficulty.py|$(fns lpntk.difficulty choose_target target_similarity rank_others select_sets official_swap contradictory_sets training_set_positions curve_area size_levels quad_tree_subsets pearson_matrix label_matched_sets)|tests/difficulty/test_difficulty_selection.py tests/difficulty/test_difficulty_l2_recording.py tests/difficulty/test_random_targets.py tests/difficulty/test_label_matched_sets.py tests/test_brute_force_references.py|not stage and not lpntk and not sign and not forgetting_run and not flip and not crop and not matmul and not train_model and not cosine_schedule"
  [kernel]="lpntk/kernel/_kernels.py|$(fns lpntk.kernel._kernels sign_vectors _check_options _setup _const_cot gradient_gram _label_gram _lpntk_vec lpntk_gram pntk_gram)|tests/test_brute_force_references.py tests/kernel/test_kernel.py tests/kernel/test_kernel_contracts.py|sign_vectors or closed_form or jacrev or input_errors or linear_model_wrappers or (jacobian_contraction and auto and mlp])"
  [forgetting]="lpntk/forgetting/_events.py|lpntk.forgetting._events.*|tests/forgetting/test_forgetting.py tests/forgetting/test_event_table.py|by_hand or probability_change or metrics or el2n_approximation or event_table"
  [pruning]="lpntk/pruning/_select.py|lpntk.pruning._select.*|$PRUNING_UNIT|"
  [registry]="lpntk/pruning/_registry.py|lpntk.pruning._registry.*|tests/pruning/test_selector_registry.py|"
  [claims]="lpntk/inference.py|$(fns lpntk.inference finite_pairs sign_flip_p paired_test noninferiority_test decide holm intersection_union seeds_to_resolve seeds_to_show_noninferiority bootstrap_interval)|tests/claims/test_inference.py tests/claims/test_claims.py|not stage and not null_simulation"
)
ORDER=(scores clustering relations train difficulty kernel forgetting pruning registry claims)

run_group() {
  local group=$1 spec file globs tests select work
  spec=${GROUPS_[$group]:?unknown group $group (known: ${ORDER[*]})}
  IFS='|' read -r file globs tests select <<<"$spec"
  work=$root/$group
  if [ -n "${ONLY_SURVIVORS:-}" ]; then  # rerun only what the previous run of this group left alive
    globs=$(grep -E ': (survived|no tests|suspicious)$' "$work/report.txt" | awk '{print $1}' | tr -d ':' | tr '\n' ' ')
    cp "$work/report.txt" "$root/$group.previous-report.txt"
    [ -n "$globs" ] || { echo "== $group: no survivors to rerun"; return 0; }
  fi
  rm -rf "$work"
  mkdir -p "$work"
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work")
  {
    echo
    echo "[tool.mutmut]"
    echo "source_paths = [\"lpntk/\"]"
    echo "only_mutate = [\"$file\"]"
    echo "also_copy = [\".test/\", \"workflow/\", \"config/\", \"Snakefile\", \"README.md\", \"docs/\"]"
    echo "pytest_add_cli_args = [\"-p\", \"no:cacheprovider\", \"-m\", \"not slow\", \"-q\"${select:+, \"-k\", \"$select\"}]"
    printf 'pytest_add_cli_args_test_selection = [%s]\n' "$(printf '"%s", ' $tests | sed 's/, $//')"
    echo "process_isolation = \"forkserver\""
  } >>"$work/pyproject.toml"
  echo "== $group: mutating $file, functions: $globs; tests: $tests -k '$select'"
  local start=$SECONDS
  # one intra-op thread per worker: workers run side by side, and libgomp is not fork-safe once its pool exists
  (cd "$work" && OMP_NUM_THREADS=1 MPLBACKEND=Agg PYTHONPATH= mutmut run --max-children "$children" $globs) \
    >"$work/run.log" 2>&1 || { tail -40 "$work/run.log"; return 1; }
  (cd "$work" && mutmut results --all true) >"$work/results.txt" 2>&1 || true
  python3 - "$work/results.txt" "$globs" >"$work/report.txt" <<'EOF'
import fnmatch, re, sys
from collections import Counter, defaultdict
text, globs = open(sys.argv[1]).read(), sys.argv[2].split()
status = {}
for line in text.splitlines():
    m = re.match(r"\s*(\S+__mutmut_\d+): (.+)$", line)
    if m and any(fnmatch.fnmatch(m[1], g) for g in globs):
        status[m[1]] = m[2].strip()
by_fn = defaultdict(Counter)
for name, st in status.items():
    by_fn[name.rsplit("__mutmut_", 1)[0]][st] += 1
total = Counter(status.values())
tested = sum(total.values()) - total.get("skipped", 0) - total.get("not checked", 0)
killed = total.get("killed", 0) + total.get("timeout", 0)
print(f"mutants: {sum(total.values())}  " + "  ".join(f"{k}: {v}" for k, v in sorted(total.items())))
print(f"score (killed + timeout) / tested: {killed}/{tested} = {100 * killed / max(tested, 1):.1f} %")
for fn, c in sorted(by_fn.items()):
    k = c.get("killed", 0) + c.get("timeout", 0)
    print(f"  {fn}: {k}/{sum(c.values())} killed" + ("" if k == sum(c.values()) else f"  ({dict(c)})"))
print("not killed:")
for name, st in sorted(status.items()):
    if st not in ("killed", "timeout"):
        print(f"  {name}: {st}")
EOF
  echo "wall time: $((SECONDS - start)) s with $children workers ($(date -u +%Y-%m-%dT%H:%MZ))" >>"$work/report.txt"
  cat "$work/report.txt"
}

if [ "$#" -eq 0 ]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d'
  exit 2
fi
[ "$1" = all ] && set -- "${ORDER[@]}"
for g in "$@"; do
  run_group "$g"
done
