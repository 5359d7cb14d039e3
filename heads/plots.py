"""PNG figures of head results: per-fold CCC bars, predicted-vs-true scatter, attention histograms, and a
forest plot of differences from a baseline.

Each function writes to ``target``: a file path or a binary file object (the HTML report renders in memory).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402


def plot_per_fold(per_fold: pl.DataFrame, target) -> None:  # noqa: ANN001 - path or binary file
    labels = per_fold["label"].unique(maintain_order=True).to_list()
    folds = sorted(per_fold["fold"].unique().to_list())
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    width = 0.8 / max(1, len(labels))
    for ax, metric, title in zip(axes, ("ccc_v", "ccc_a"), ("valence CCC", "arousal CCC")):
        for i, label in enumerate(labels):
            rows = per_fold.filter(pl.col("label") == label).sort("fold")
            x = np.array([folds.index(f) for f in rows["fold"]]) + i * width
            ax.bar(x, rows[metric].to_numpy(), width, label=label)
        ax.set_xticks(np.arange(len(folds)) + 0.4 - width / 2, [f"fold {f}" for f in folds])
        ax.set_title(title)
        ax.axhline(0, color="black", lw=0.5)
    axes[0].set_ylabel("CCC")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(target, format="png", dpi=110)
    plt.close(fig)


def plot_scatter(predictions: dict[str, pl.DataFrame], target) -> None:  # noqa: ANN001 - path or binary file
    fig, axes = plt.subplots(len(predictions), 2, figsize=(8, 3.6 * len(predictions)), squeeze=False)
    for row, (label, preds) in enumerate(predictions.items()):
        for col, dim in enumerate(("valence", "arousal")):
            ax = axes[row, col]
            true, pred = preds[f"{dim}_true"].to_numpy(), preds[f"{dim}_pred"].to_numpy()
            jitter = np.random.default_rng(0).uniform(-0.04, 0.04, len(true))  # categorical corpora stack points
            ax.scatter(true + jitter, pred, s=5, alpha=0.35)
            lo, hi = min(true.min(), pred.min()), max(true.max(), pred.max())
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
            ax.set_title(f"{label}: {dim}", fontsize=9)
            ax.set_xlabel("true")
            ax.set_ylabel("predicted")
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=100)
    plt.close(fig)


def plot_attention(predictions: dict[str, pl.DataFrame], target) -> None:  # noqa: ANN001 - path or binary file
    """Histograms of w[0]: what the valence branch gives prosody, what the arousal branch gives speech."""
    with_attention = {k: v for k, v in predictions.items() if "attn_valence_prosody" in v.columns}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, preds in with_attention.items():
        axes[0].hist(preds["attn_valence_prosody"].to_numpy(), bins=30, range=(0, 1), alpha=0.6, label=label)
        axes[1].hist(preds["attn_arousal_speech"].to_numpy(), bins=30, range=(0, 1), alpha=0.6, label=label)
    axes[0].set_title("valence branch: weight on prosody (w[0])")
    axes[1].set_title("arousal branch: weight on speech (w[0])")
    for ax in axes:
        ax.set_xlabel("weight")
    if with_attention:
        axes[1].legend(fontsize=8)
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no attention heads among these runs", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=110)
    plt.close(fig)


def plot_forest(comparisons: dict, target) -> None:  # noqa: ANN001 - path or binary file
    """Each label's difference from the baseline per metric: the point and its interval, 0 marked; rows
    whose reading is a difference are drawn solid, the others hollow."""
    metrics = list(dict.fromkeys(r["metric"] for r in comparisons["rows"]))
    labels = list(dict.fromkeys(r["label"] for r in comparisons["rows"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 0.6 * len(labels) + 1.6), sharey=True,
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for y, label in enumerate(labels):
            row = next(r for r in comparisons["rows"] if r["label"] == label and r["metric"] == metric)
            if row["delta"] is None:
                continue
            low, high = row["ci"] if row["ci"] and None not in row["ci"] else (row["delta"], row["delta"])
            distinct = row["reading"] != "not distinguishable"
            ax.plot([low, high], [y, y], color="C0", lw=2)
            ax.plot(row["delta"], y, "o", color="C0", mfc="C0" if distinct else "white", ms=7)
            ax.annotate(f"p={row['p_holm']:.3f}", (high, y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"Δ{metric} vs {comparisons['baseline']}", fontsize=9)
        ax.set_xlabel("difference (interval: 95 % paired speaker bootstrap)")
    axes[0][0].set_yticks(range(len(labels)), labels)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=110)
    plt.close(fig)
