# lpntk: regenerate the experiments of "lpNTK: Better Generalisation with Less Data via Sample
# Interaction During Learning" (Guo, Ren, Albrecht, Smith; ICLR 2024).
#
#   snakemake --cores all                                  # embedded default (digits, minutes, offline)
#   snakemake --cores all --configfile config/paper.yaml   # the paper's scale (MNIST, CIFAR-10; GPU)
#
# A --configfile replaces config/config.yaml (it is not merged into it). With --directory elsewhere, a
# config/config.yaml there is used if it exists, else this repository's.

from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


DEFAULT_CONFIG = "config/config.yaml"
if not Path(DEFAULT_CONFIG).exists():
    DEFAULT_CONFIG = str(Path(workflow.basedir) / DEFAULT_CONFIG)

if not workflow.overwrite_configfiles:

    configfile: DEFAULT_CONFIG


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/kernel.smk"
include: "workflow/rules/relations.smk"
include: "workflow/rules/difficulty.smk"
include: "workflow/rules/forgetting.smk"
include: "workflow/rules/scores.smk"
include: "workflow/rules/pruning.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/gallery.smk"


onstart:
    start_tracking()


onsuccess:
    finish_tracking("FINISHED")


onerror:
    finish_tracking("FAILED")


rule all:
    default_target: True
    input:
        all_outputs,
