"""PNG figures of head results: per-fold CCC bars, predicted-vs-true scatter, attention histograms by true
valence/arousal, learning curves, and a forest plot of differences from a baseline.

Each function writes to ``target``: a file path or a binary file object (the HTML report renders in memory).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from core.metrics import ccc  # noqa: E402


def plot_per_fold(per_fold: pl.DataFrame, fold_sd: pl.DataFrame | None, target,  # noqa: ANN001
                  labels: list[str] | None = None) -> None:
    """CCC per fold and label as bars, with the fold's number of test utterances under it; ``fold_sd``
    (columns label, fold, ccc_v_sd, ccc_a_sd: spread over seeds) draws error bars where there are 2+ seeds.
    ``labels``: the order of the bars and the legend (the results table's order)."""
    labels = labels or per_fold["label"].unique(maintain_order=True).to_list()
    with_seed_bars = fold_sd is not None and fold_sd.drop_nulls(["ccc_v_sd"]).height > 0
    folds = sorted(per_fold["fold"].unique().to_list())
    counts = {f: int(per_fold.filter(pl.col("fold") == f)["n_test"].max()) for f in folds}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    width = 0.8 / max(1, len(labels))
    for ax, metric, title in zip(axes, ("ccc_v", "ccc_a"), ("valence CCC", "arousal CCC")):
        for i, label in enumerate(labels):
            rows = per_fold.filter(pl.col("label") == label).sort("fold")
            x = np.array([folds.index(f) for f in rows["fold"]]) + i * width
            errors = None
            if fold_sd is not None:
                sd = rows.join(fold_sd, on=["label", "fold"], how="left")[f"{metric}_sd"].to_numpy()
                errors = np.where(np.isfinite(sd), sd, 0.0) if np.isfinite(sd).any() else None
            ax.bar(x, rows[metric].to_numpy(), width, yerr=errors, capsize=2, label=label)
        ax.set_xticks(np.arange(len(folds)) + 0.4 - width / 2, [f"fold {f}\nn={counts[f]}" for f in folds])
        ax.set_title(title + (" (error bars: sd over seeds)" if with_seed_bars else ""))
        ax.axhline(0, color="black", lw=0.5)
    axes[0].set_ylabel("CCC")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(target, format="png", dpi=110)
    plt.close(fig)


def plot_scatter(predictions: dict[str, pl.DataFrame], target) -> None:  # noqa: ANN001 - path or binary file
    """Predicted vs true per label and dimension, every panel of a dimension on the same axes, with its CCC
    (pooled over the test utterances of all folds, mean over seeds per utterance). Dashed lines mark the range
    of the true labels (the corpus's scale as used), and the title counts the predictions outside it."""
    fig, axes = plt.subplots(len(predictions), 2, figsize=(8, 3.6 * len(predictions)), squeeze=False)
    limits = {}
    for dim in ("valence", "arousal"):
        values = np.concatenate([np.r_[p[f"{dim}_true"].to_numpy(), p[f"{dim}_pred"].to_numpy()]
                                 for p in predictions.values()])
        pad = 0.05 * (values.max() - values.min() + 1e-9)
        limits[dim] = (values.min() - pad, values.max() + pad)
    for row, (label, preds) in enumerate(predictions.items()):
        preds = preds.group_by("utt_id", maintain_order=True).agg(pl.col("^(valence|arousal)_(true|pred)$").mean())
        for col, dim in enumerate(("valence", "arousal")):
            ax = axes[row, col]
            true, pred = preds[f"{dim}_true"].to_numpy(), preds[f"{dim}_pred"].to_numpy()
            jitter = np.random.default_rng(0).uniform(-0.04, 0.04, len(true))  # categorical corpora stack points
            ax.scatter(true + jitter, pred, s=5, alpha=0.35)
            lo, hi = limits[dim]
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            low, high = true.min(), true.max()
            for edge in (low, high):
                ax.axhline(edge, color="grey", lw=0.7, ls="--")
            outside = int(((pred < low) | (pred > high)).sum())
            ax.set_title(f"{label}: {dim} (pooled CCC {ccc(pred, true):.3f}, n={len(true)})\n"
                         f"labels span {low:g}-{high:g} (dashed); {outside} prediction(s) outside", fontsize=8)
            ax.set_xlabel(f"true {dim} (corpus scale)")
            ax.set_ylabel(f"predicted {dim}")
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=100)
    plt.close(fig)


def plot_attention(predictions: dict[str, pl.DataFrame], target) -> None:  # noqa: ANN001 - path or binary file
    """w[0] of each branch (valence -> prosody, arousal -> speech) split by the utterance's true valence or
    arousal tertile (low / mid / high), one row per label: does a branch lean differently on calm and
    excited speech?"""
    with_attention = {k: v for k, v in predictions.items() if "attn_valence_prosody" in v.columns}
    rows = max(1, len(with_attention))
    fig, axes = plt.subplots(rows, 2, figsize=(10, 3.2 * rows), squeeze=False)
    for row, (label, preds) in enumerate(with_attention.items()):
        preds = preds.group_by("utt_id", maintain_order=True).agg(  # one point per utterance: mean over seeds
            pl.col("valence_true", "arousal_true", "attn_valence_prosody", "attn_arousal_speech").mean())
        for col, (dim, column, block) in enumerate((("valence", "attn_valence_prosody", "prosody"),
                                                   ("arousal", "attn_arousal_speech", "speech"))):
            ax = axes[row, col]
            true, weight = preds[f"{dim}_true"].to_numpy(), preds[column].to_numpy()
            cuts = np.quantile(true, [1 / 3, 2 / 3])
            groups = np.digitize(true, cuts, right=True)  # 0 low, 1 mid, 2 high
            for g, name in enumerate(("low", "mid", "high")):
                chosen = weight[groups == g]
                if len(chosen):
                    ax.hist(chosen, bins=30, range=(0, 1), alpha=0.5, label=f"{name} true {dim} (n={len(chosen)})")
            ax.set_title(f"{label}: {dim} branch, weight on {block} (w[0])", fontsize=9)
            ax.set_xlabel("weight")
            ax.set_ylabel("utterances")
            ax.legend(fontsize=7)
    if not with_attention:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no attention heads among these runs", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=100)
    plt.close(fig)


def plot_learning_curves(histories: dict[str, pl.DataFrame], target) -> None:  # noqa: ANN001
    """Training loss and validation mean CCC per epoch, one thin line per fold and seed, per label."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for i, (label, history) in enumerate(histories.items()):
        for j, ((_fold, _seed), run) in enumerate(history.group_by(["fold", "seed"], maintain_order=True)):
            run = run.sort("epoch")
            kwargs = {"color": f"C{i}", "lw": 0.8, "alpha": 0.6, "label": label if j == 0 else None}
            axes[0].plot(run["epoch"], run["train_loss"], **kwargs)
            axes[1].plot(run["epoch"], run["val_ccc"], **kwargs)
    axes[0].set_title("training loss (1 - CCC, + MSE term)")
    axes[1].set_title("validation mean CCC (held-out dialogue groups)")
    for ax in axes:
        ax.set_xlabel("epoch")
    if histories:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=100)
    plt.close(fig)


def plot_forest(comparisons: dict, target) -> None:  # noqa: ANN001 - path or binary file
    """Each label's difference from the baseline per metric: the point and its interval, 0 marked, one x scale
    for every panel; filled points are differences the reading calls real (interval excludes 0 and Holm p below
    the level), hollow ones are not; the Holm-adjusted p of each row sits inside the panel's right edge."""
    metrics = list(dict.fromkeys(r["metric"] for r in comparisons["rows"]))
    labels = list(dict.fromkeys(r["label"] for r in comparisons["rows"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 0.6 * len(labels) + 2.0), sharey=True,
                             sharex=True, squeeze=False)
    values = [v for r in comparisons["rows"] for v in [r["delta"], *(r["ci"] or [])] if v is not None]
    span = max(max((abs(v) for v in values), default=0.05), 0.01) * 1.25
    for ax, metric in zip(axes[0], metrics):
        for y, label in enumerate(labels):
            row = next(r for r in comparisons["rows"] if r["label"] == label and r["metric"] == metric)
            if row["delta"] is None:
                continue
            low, high = row["ci"] if row["ci"] and None not in row["ci"] else (row["delta"], row["delta"])
            distinct = row["reading"] != "not distinguishable"
            ax.plot([low, high], [y, y], color="C0", lw=2)
            ax.plot(row["delta"], y, "o", color="C0", mfc="C0" if distinct else "white", ms=7)
            p = "undefined" if row["p_holm"] is None else f"{row['p_holm']:.3f}"
            ax.text(0.98, y, f"p={p}", transform=ax.get_yaxis_transform(), ha="right",
                    va="bottom", fontsize=7)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlim(-span, span)
        ax.set_title(f"Δ{metric} vs {comparisons['baseline']}", fontsize=9)
        method = {"fold-t": "t interval over folds", "percentile-bootstrap": "speaker-bootstrap interval"}.get(
            comparisons.get("interval_method"), "interval")
        ax.set_xlabel(f"Δ, paired 95 % {method}", fontsize=8)
    axes[0][0].set_yticks(range(len(labels)), labels)
    axes[0][0].set_ylim(len(labels) - 0.4, -0.8)
    fig.text(0.5, 0.01, "filled: a difference (interval excludes 0 and Holm p < level); hollow: not "
             "distinguishable; p: Holm-adjusted speaker-permutation p", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(target, format="png", dpi=110)
    plt.close(fig)


def plot_matrix(rows: list[dict], label: str, target) -> None:  # noqa: ANN001 - path or binary file
    """Heatmaps of CCC-V and CCC-A for run ``label``: trained on (rows) x tested on (columns), the value and its
    interval written in each cell (``heads.studies.cross.matrix`` rows)."""
    rows = [r for r in rows if r["run"] == label]
    corpora = list(dict.fromkeys(r["train"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(4 + 2.2 * len(corpora), 1.5 + 1.3 * len(corpora)), squeeze=False)
    for ax, key, title in zip(axes[0], ("ccc_v", "ccc_a"), ("valence CCC", "arousal CCC")):
        grid = np.full((len(corpora), len(corpora)), np.nan)
        for r in rows:
            grid[corpora.index(r["train"]), corpora.index(r["test"])] = np.nan if r[key] is None else r[key]
        image = ax.imshow(grid, vmin=-0.2, vmax=1.0, cmap="viridis")
        for r in rows:
            i, j = corpora.index(r["train"]), corpora.index(r["test"])
            ci = r[f"{key}_ci"]
            text = "undefined" if r[key] is None else f"{r[key]:.2f}" + (
                f"\n[{ci[0]:.2f}, {ci[1]:.2f}]" if ci and None not in ci else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if r[key] is not None and r[key] < 0.5 else "black")
        ax.set_xticks(range(len(corpora)), corpora, rotation=20)
        ax.set_yticks(range(len(corpora)), corpora)
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
        ax.set_title(f"{label}: {title}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=100)
    plt.close(fig)


def plot_over_time(frame: pl.DataFrame, target, label_range: dict | None = None,  # noqa: ANN001
                   max_files: int = 12) -> None:
    """Predicted valence and arousal of each file's segments against time (segment midpoints, seconds): one panel
    per file (the first ``max_files``), the training labels' range shaded when known. ``frame``: ``predict
    --segment`` rows (utt_id, start_s, end_s, valence, arousal)."""
    files = frame["utt_id"].unique(maintain_order=True).to_list()[:max_files]
    fig, axes = plt.subplots(len(files), 1, figsize=(10, 2.2 * len(files) + 0.4), squeeze=False, sharey=True)
    for ax, file in zip(axes[:, 0], files):
        rows = frame.filter(pl.col("utt_id") == file).sort("start_s")
        middle = ((rows["start_s"] + rows["end_s"]) / 2).to_numpy()
        for dimension, colour in (("valence", "tab:blue"), ("arousal", "tab:red")):
            ax.plot(middle, rows[dimension].to_numpy(), marker=".", color=colour, label=dimension)
            if label_range and dimension in label_range:
                ax.axhspan(*label_range[dimension], color=colour, alpha=0.06)
        ax.set_title(file, fontsize=9, loc="left")
        ax.set_ylabel("prediction")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time in the recording (s, segment midpoints)")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=100)
    plt.close(fig)


def plot_prediction_scatter(frame: pl.DataFrame, target) -> None:  # noqa: ANN001
    """Whole-file predictions as points in the valence/arousal plane."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(frame["valence"].to_numpy(), frame["arousal"].to_numpy(), s=12)
    ax.set_xlabel("predicted valence")
    ax.set_ylabel("predicted arousal")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=100)
    plt.close(fig)
