"""Stage gallery: the training samples behind the statistics, one figure per dataset (PNG, PDF) and its table.

Four panels, each drawn only when the stage it reads ran (else it says which switch turns it on):

(a) relations -- a few anchors, one per class for classes spread over the labels, chosen inside the relations
    stage's cross-class panel (``gallery.anchor``: the sample most contradicted by another, so that every relation
    shows, or the largest |phi|^2, the official target rule), with their most interchangeable partners (largest
    cos > tau, from the anchor's class Gram: every sample of the class), least related (smallest |cos|) and most
    contradictory (most negative cos < 0) partners among the panel's samples of every class (their cross-class
    lpNTK exists only there); without the panel (relations disabled) all three come from the class Gram;
(b) FPC clusters at the smallest kept fraction -- the largest clusters of the same classes: head and members, the
    members closest to the head first (those of one pruning seed, :func:`lpntk.plan.gallery_seed`: the reference
    seed where it is one, whose Grams panel (a) reads; else the first, from its own Grams);
(c) pruning -- per method, the samples its subset at its smallest kept fraction (the same seed's) leaves out, in the
    order the method gives them up: lowest EL2N / GraNd / forgetting / random score first, most redundant (closest
    to its FPC head) first for the lpNTK methods;
(d) small clusters -- per data fraction, the samples removed as small clusters at the smallest removed share
    (``d<d>-base`` minus ``d<d>-small-r<r>``), smallest clusters first.

The choices are the numpy functions of :mod:`lpntk.gallery`; the drawing is
:func:`lpntk.figures.gallery_figures.plot_gallery`. One class Gram is in memory at a time. Numpy, pandas and matplotlib
only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..figures.gallery_figures import Group, Panel, Row, Tile, plot_gallery
from ..gallery import (
    anchor_positions,
    cluster_members,
    largest_clusters,
    min_cosines,
    relation_partners,
    removal_order,
    removed,
    spread_classes,
)
from ..grams import iter_class_grams
from ..io import load_npz, save_table
from ..methods import method as pruning_method
from ..plan import cluster_keeps, fmt, small_draw_seed, small_key
from ..relations import cosine
from .cluster_stage import clusters_at_keep
from .common import check_outputs, log, tracking_run

__all__ = ["GALLERY_OUTPUTS", "gallery_stage"]

#: Output names of :func:`gallery_stage` (the rule's ``output:`` keys).
GALLERY_OUTPUTS = ("figure", "figure_pdf", "samples")


def _files(paths) -> list:
    """One path, or several (the prune stage writes one file per prune group)."""
    return [paths] if isinstance(paths, str | os.PathLike) else list(paths)


def _g(v: float) -> str:
    """A value short enough for a tile's caption: 1090, 0.938, 8.0e-07."""
    a = abs(float(v))
    if a >= 1000:
        return f"{v:.0f}"
    return f"{v:.3g}" if a >= 0.01 or a == 0 else f"{v:.1e}"


class _Book:
    """The tiles of the figure and one table row per tile."""

    def __init__(self, index: np.ndarray, labels: np.ndarray):
        self.index, self.labels, self.records = index, labels, []

    def tile(self, panel: str, row: str, group: str, pos: int, text: str = "", **values) -> Tile:
        pos = int(pos)
        rec = {"panel": panel, "row": row.replace("\n", " "), "group": group, "index": int(self.index[pos])}
        rec.update(position=pos, label=int(self.labels[pos]), **values)
        self.records.append(rec)
        sep = "" if text.startswith("\n") or not text else "  "  # a text starting with a newline: its own line
        return Tile(pos, f"y={self.labels[pos]}{sep}{text}")

    def table(self) -> pd.DataFrame:
        cols = ["panel", "row", "group", "index", "position", "label", "kappa", "cos", "score"]
        return pd.DataFrame(self.records).reindex(columns=cols)


def _anchor_score(rule: str, gram: np.ndarray, sq: np.ndarray) -> np.ndarray:
    """The score whose largest value makes a class's anchor (``gallery.anchor``)."""
    if rule == "max_self":
        return np.asarray(sq, dtype=np.float64)
    if rule == "most_contradicted":
        return -min_cosines(gram, sq)
    raise ValueError(f"gallery.anchor must be 'most_contradicted' or 'max_self', got {rule!r}")


def _class_pass(kernels, shown, anchors, rule, head_ids, head_of, n_members, pos_of, n_train):
    """One pass over the class Grams (one in memory at a time).

    Returns: per anchor and per shown head (train positions) its class row (train positions of the class, kappa
    row, cos row, its own place in the class); per shown head its cluster (size, members as (train position, cos to
    the head)); every sample's cos to its FPC head (NaN without clusters); the anchors, with those of classes
    without one in the cross-class panel (``anchors[c] is None``) chosen from the class Gram."""
    rows, members, redundancy = {}, {}, np.full(n_train, np.nan)
    anchors = dict(anchors)
    for g in iter_class_grams(kernels):
        gram, sq = np.asarray(g.gram, dtype=np.float64), np.asarray(g.sq_norm, dtype=np.float64)
        cpos, ids = np.asarray(g.position, np.int64), np.asarray(g.index, np.int64)
        heads = None
        if head_of is not None:
            local = {int(i): j for j, i in enumerate(ids)}
            heads = np.asarray([head_of[int(i)] for i in ids], dtype=np.int64)
            hl = np.asarray([local[int(h)] for h in heads], dtype=np.int64)
            denom = np.sqrt(np.clip(sq * sq[hl], 0.0, None))
            vals = np.divide(gram[np.arange(len(hl)), hl], denom, out=np.zeros(len(hl)), where=denom > 0)
            redundancy[cpos] = np.clip(vals, -1.0, 1.0)
        if g.label not in shown:
            continue
        if g.label in anchors and anchors[g.label] is None:
            score = _anchor_score(rule, gram, sq)
            anchors[g.label] = int(cpos[anchor_positions(np.full(len(sq), g.label), score, [g.label])[0]])
        by_pos = {int(p): j for j, p in enumerate(cpos)}
        wanted = [anchors[g.label]] if anchors.get(g.label) is not None else []
        for p in wanted + [pos_of[h] for h in head_ids.get(g.label, [])]:
            j = by_pos[p]
            rows[p] = (cpos, gram[j], cosine(gram[j][None, :], sq[j : j + 1], sq)[0], j)
        for h in head_ids.get(g.label, []):
            cos_h = rows[pos_of[h]][2]
            picks = cluster_members(ids, heads, h, n_members, cos_h)
            members[h] = (int((heads == h).sum()), [(int(cpos[j]), float(cos_h[j])) for j in picks])
    return rows, members, redundancy, anchors


_HEADINGS = {
    "interchangeable": ("most interchangeable", "no pair with cos > τ"),
    "unrelated": ("least related", "no pair with |cos| ≤ τ"),
    "contradictory": ("most contradictory", "no pair with cos < 0"),
}


def _relations_panel(book, n, rule, shown, anchors, rows, panel_npz, tau) -> Panel:
    where = "the cross-class panel (all classes)" if panel_npz is not None else "the anchor's class"
    anchor = "the sample with the most negative cos to another" if rule == "most_contradicted" else "the largest |φ|²"
    note = (
        f"anchor: {anchor} among its class's samples in {where}; most interchangeable: largest cos > τ = {tau:g} "
        f"within the anchor's class; least related: smallest |cos|, and most contradictory: most negative cos (< 0; "
        f"contradictory under the τ rule below -{tau:g}), both among {where}. κ: lpNTK, cos: κ / (|φ| |φ'|)."
    )
    if panel_npz is None:
        note += " No cross-class panel: relations.enabled is false."
    out = []
    for c in shown:
        p = anchors.get(c)
        if p is None or p not in rows:
            continue
        cpos, kap, cos, j = rows[p]
        label = f"class {c}\nindex {book.index[p]}"
        text = f"|φ|²={_g(kap[j])}"
        groups = [Group("anchor", "anchor", [book.tile("relations", label, "anchor", p, text, kappa=kap[j])])]
        pools = {"interchangeable": (cpos, kap, cos, j)}
        pools["unrelated"] = pools["contradictory"] = pools["interchangeable"]
        if panel_npz is not None:
            q = int(np.flatnonzero(np.asarray(panel_npz["position"]) == p)[0])
            pk = np.asarray(panel_npz["gram"][q], dtype=np.float64)
            sq = np.asarray(panel_npz["sq_norm"], dtype=np.float64)
            pc = cosine(pk[None, :], sq[q : q + 1], sq)[0]
            pools["unrelated"] = pools["contradictory"] = (np.asarray(panel_npz["position"], np.int64), pk, pc, q)
        for rel, (heading, empty) in _HEADINGS.items():
            tp, kv, cv, own = pools[rel]
            limit = 0.0 if rel == "contradictory" else tau  # the sign rule: no digits pair reaches cos < -0.1
            tiles = [
                book.tile("relations", label, rel, tp[i], f"κ={_g(kv[i])}\ncos={cv[i]:.2f}", kappa=kv[i], cos=cv[i])
                for i in relation_partners(cv, own, n, limit)[rel]
            ]
            groups.append(Group(heading, rel, tiles, empty=empty))
        out.append(Row(label, groups))
    return Panel("(a) Relations: anchors and their partners under lpNTK", out, note)


def _cluster_panel(book, shown, head_ids, members, pos_of, keep: float) -> Panel:
    out = []
    for c in shown:
        groups = []
        for h in head_ids.get(c, []):
            size, picks = members[h]
            label = f"class {c}"
            groups.append(Group(f"head, n={size}", "head", [book.tile("clusters", label, "head", pos_of[h], "head")]))
            tiles = [book.tile("clusters", label, "member", p, f"cos={v:.2f}", cos=v) for p, v in picks]
            groups.append(Group("members, closest first", "members", tiles, empty="no other member"))
        if groups:
            out.append(Row(f"class {c}", groups))
    note = (
        f"the largest farthest-point clusters of each class at kept fraction {keep:g} (one head per kept sample); "
        "cos: lpNTK cosine to the head. Pruning keeps the heads and drops the members."
    )
    return Panel("(b) FPC clusters: heads and their members", out, note)


def _pruning_panel(book, plan: pd.DataFrame, kept: Mapping[str, np.ndarray], table, redundancy, n: int) -> Panel:
    out = []
    rows = plan[(plan["experiment"] == "table") & (plan["method"] != "full")]
    for method, part in rows.groupby("method", sort=False):  # one seed's subsets
        name, keep = part.sort_values("keep", na_position="last").iloc[0][["name", "keep"]]
        spec = pruning_method(method)  # its score (or none: by redundancy), row title and caption tag
        if spec.score is not None and table is None:
            continue
        if spec.score is not None:
            value = table[spec.score].to_numpy(np.float64)
            keys = [value] if spec.score == "random" else [value, table["random"].to_numpy(np.float64)]
            short, by = spec.tag, f"lowest {spec.short} score"
        else:
            value, short, by = redundancy, "cos", "closest to its FPC head"
            keys = [-np.nan_to_num(redundancy, nan=-1.0)]
        order = removal_order(book.index, kept[name], keys, n)
        label = spec.short + (f"\nkeep {keep:g}" if keep == keep else f"\n{name}")
        tiles = [
            book.tile("pruning", label, method, p, f"\n{short}={_g(value[p])}" if short else "", score=float(value[p]))
            for p in order
        ]
        n_removed = len(book.index) - len(kept[name])
        out.append(Row(label, [Group(f"removed first ({len(tiles)} of {n_removed}): {by} first", "removed", tiles)]))
    note = "per method, the samples its subset at its smallest kept fraction leaves out, in the order it gives them up"
    return Panel("(c) Pruning: what each method removes first", out, note)


def _small_panel(book, cfg, plan: pd.DataFrame, kept: Mapping[str, np.ndarray], cl, pos_of, n: int) -> Panel:
    out = []
    small = plan[(plan["method"] == "small_clusters") & (plan["kernel"].fillna("full") == "full")]
    for d, part in small.groupby("data_fraction", sort=True):  # the full-data kernel's clusters; one seed's draw
        name, r, seed = part.sort_values("remove").iloc[0][["name", "remove", "seed"]]
        prefix = small_key(d, small_draw_seed(cfg, int(seed)))
        sub = np.asarray(cl[f"{prefix}_index"], np.int64)
        head = np.asarray(cl[f"{prefix}_cluster"], np.int64)
        heads, sizes = np.unique(head, return_counts=True)
        size = sizes[np.searchsorted(heads, head)]
        order = removal_order(sub, kept[name], [size, head], n)
        gone = removed(kept[f"d{fmt(d)}-base"], kept[name])
        label = f"{100 * d:g} % of data\n{100 * r:g} % removed"
        tiles = [
            book.tile("small_clusters", label, "removed", pos_of[int(sub[i])], f"cluster of {size[i]}", score=size[i])
            for i in order
        ]
        heading = f"removed ({len(tiles)} of {len(gone)}): whole clusters, smallest first"
        out.append(Row(label, [Group(heading, "removed", tiles)]))
    note = (
        "FPC of seeded class-balanced subsets; the removal rule drops whole clusters, smallest first, until the "
        "removed share of each class is reached (subset d<d>-base minus d<d>-small-r<r>)"
    )
    return Panel("(d) Small clusters: what removing them drops", out, note)


def _skipped(title: str, why: str) -> Panel:
    return Panel(title, [], f"skipped: {why}")


def gallery_stage(
    *,
    dataset: str,
    cfg: Mapping,
    train: str | os.PathLike,
    kernels: Sequence[str | os.PathLike],
    outputs: Mapping[str, str],
    cross: str | os.PathLike | None = None,
    clusters: str | os.PathLike | None = None,
    subsets: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    subsets_table: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    scores: str | os.PathLike | None = None,
    selection_kernels: Sequence[str | os.PathLike] | None = None,
    mlflow_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Draw the gallery of one dataset (see the module docstring) and write its table.

    ``train``: the prepared training split; ``kernels``: the reference seed's kernel files; the optional inputs are
    those of the enabled stages, all of one pruning seed -- ``cross``: the relations stage's cross-class panel;
    ``clusters``: the cluster stage's npz; ``subsets`` / ``subsets_table``: the prune stage's npz and CSV files (one
    per prune group); ``scores``: its scores table; ``selection_kernels``: its kernel files where it is not the
    reference seed (None: ``kernels`` are its own). ``outputs`` maps every name of :data:`GALLERY_OUTPUTS` to a
    path: the figure (PNG, PDF) and ``samples`` (CSV: one row per tile, with its panel, row, group, original index,
    position, label and kappa / cos / score). Returns that table."""
    check_outputs(outputs, GALLERY_OUTPUTS, "gallery_stage")
    gcfg, tau = cfg["gallery"], float(cfg["relations"]["tau"])
    arr = load_npz(train, what="prepared train split")
    x, labels, index = arr["x"], np.asarray(arr["y"], np.int64), np.asarray(arr["index"], np.int64)
    pos_of = {int(i): p for p, i in enumerate(index.tolist())}
    shown = spread_classes(np.unique(labels).tolist(), int(gcfg["anchors"]))
    book = _Book(index, labels)

    panel = load_npz(cross, what="cross-class panel") if cross is not None else None
    if panel is not None and not np.asarray(panel["gram"]).size:
        panel = None  # relations.cross_samples_per_class: 0
    anchors: dict[int, int | None] = dict.fromkeys(shown)
    if panel is not None:
        plabels = np.asarray(panel["label"], np.int64)
        score = _anchor_score(str(gcfg["anchor"]), panel["gram"], panel["sq_norm"])
        for q in anchor_positions(plabels, score, shown):
            anchors[int(plabels[q])] = int(panel["position"][q])

    cl = load_npz(clusters, what="FPC clusters") if clusters is not None else None
    keep = min(cluster_keeps(cfg)) if cl is not None else None
    head_of, head_ids = None, {}
    if cl is not None:
        heads = clusters_at_keep(cl, keep)
        head_of = dict(zip(np.asarray(cl["index"]).tolist(), heads.tolist(), strict=True))
        cl_labels = np.asarray(cl["label"], np.int64)
        head_ids = {c: largest_clusters(heads[cl_labels == c], int(gcfg["clusters_per_row"])) for c in shown}
    rule, n_members = str(gcfg["anchor"]), int(gcfg["members"])
    if selection_kernels is None:  # the clusters are the reference seed's: one pass over its Grams
        rows, members, redundancy, anchors = _class_pass(
            kernels, shown, anchors, rule, head_ids, head_of, n_members, pos_of, len(index)
        )
    else:  # the anchors' rows from the reference seed's Grams, the clusters' from the pruning seed's own
        rows, _, _, anchors = _class_pass(kernels, shown, anchors, rule, {}, None, n_members, pos_of, len(index))
        _, members, redundancy, _ = _class_pass(
            selection_kernels, shown, {}, rule, head_ids, head_of, n_members, pos_of, len(index)
        )

    panels = [_relations_panel(book, int(gcfg["partners"]), str(gcfg["anchor"]), shown, anchors, rows, panel, tau)]
    if cl is None:
        panels.append(_skipped("(b) FPC clusters", "the cluster stage did not run (pruning.enabled is false)"))
    else:
        panels.append(_cluster_panel(book, shown, head_ids, members, pos_of, keep))
    if subsets is None or subsets_table is None:
        why = "the pruning stage did not run (pruning.enabled is false)"
        panels += [_skipped("(c) Pruning", why), _skipped("(d) Small clusters", why)]
    else:
        plan = pd.concat([pd.read_csv(p) for p in _files(subsets_table)], ignore_index=True)
        kept = {k: v for path in _files(subsets) for k, v in load_npz(path, what="pruning subsets").items()}
        table = None
        if scores is not None:
            raw = pd.read_csv(scores)
            table = raw.set_index("index").loc[index].reset_index()  # aligned with the training split
        panels.append(_pruning_panel(book, plan, kept, table, redundancy, int(gcfg["removed"])))
        if (plan["method"] == "small_clusters").any() and cl is not None:
            panels.append(_small_panel(book, cfg, plan, kept, cl, pos_of, int(gcfg["removed"])))
        else:
            panels.append(_skipped("(d) Small clusters", "pruning.small_clusters.enabled is false"))

    samples = book.table()
    title = f"{dataset}: the training samples behind the statistics"
    with tracking_run("gallery", dataset, cfg, mlflow_cfg, run_name=f"gallery-{dataset}", live=False) as run:
        plot_gallery(x, panels, title, outputs["figure"], outputs["figure_pdf"])
        save_table(outputs["samples"], samples)
        run.log_metrics({f"tiles_{k}": float(v) for k, v in samples["panel"].value_counts().sort_index().items()})
        run.log_outputs(dict(outputs))
    log.info("%s: gallery of %d samples in %d panels", dataset, len(samples), len(panels))
    return samples
