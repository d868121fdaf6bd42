"""What a sweep leaves in its folder, read back from the study (so any worker, on any machine, writes the same):

::

    OUT/trials.csv               one row per trial: state, metric, parameters, active units, epochs, seconds
    OUT/best.yaml                the best trial's whole config: vaekit train --config OUT/best.yaml
    OUT/summary.json             counts, the best trial, what pruning saved, parameter importances
    OUT/plots/metric_vs_<key>.png    the metric against each searched key (finished trials; the best starred)
    OUT/plots/latent_dim.png     when model.latent_dim is searched: the metric, the active units and the KL of
                                 each latent dimension (sorted) against the latent size
    OUT/plots/importances.png    Optuna's parameter importances (fANOVA), with two or more searched keys

Every file is written atomically (:mod:`vaekit.files`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaekit.files import atomic_write_text
from vaekit.plots import pyplot, save_figure
from vaekit.tuning.space import Param, dump_yaml
from vaekit.tuning.study import SweepSpec, optuna_module

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


def metric_label(metric: str, eval_k: int) -> str:
    """What the metric's numbers are, with their unit and the k of every NLL."""
    return {
        "val_nll": f"validation NLL (IWAE, k={eval_k}), nats",
        "val_elbo": "validation ELBO, nats",
        "probe": "linear-probe accuracy (validation split)",
        "auroc": f"AUROC of the IWAE anomaly score (k={eval_k})",
    }[metric]


def trial_rows(study: optuna.Study, params: Sequence[Param]) -> list[dict[str, Any]]:
    """One plain dict per trial (number order): state, value, config values of the searched keys, statistics."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        planned = (attrs.get("config") or {}).get("train", {}).get("epochs")
        rows.append({
            "trial": trial.number,
            "state": trial.state.name.lower(),
            "value": trial.value if trial.state.name == "COMPLETE" else None,  # a pruned trial's is an epoch's
            **{p.key: p.value_of(trial.params[p.key]) if p.key in trial.params else None for p in params},
            "active_units": attrs.get("active_units"),
            "latent_dim": attrs.get("latent_dim"),
            "val_elbo": attrs.get("val_elbo"),
            "best_epoch": attrs.get("best_epoch"),
            "epochs_run": attrs.get("epochs_run"),
            "epochs_planned": planned,
            "train_time_s": attrs.get("train_time_s"),
            "seconds": attrs.get("seconds"),
            "resumes": attrs.get("resumes"),
            "run_dir": attrs.get("run_dir"),
            "error": attrs.get("error") or attrs.get("interrupted"),
            "kl_per_dim": attrs.get("kl_per_dim"),
        })
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], params: Sequence[Param], metric: str, eval_k: int) -> str:
    """The trials as a text table (the metric's unit and k in the header line)."""
    columns = ["trial", "state", "value", *(p.key for p in params), "active_units", "epochs", "seconds"]
    cells = [columns]
    for row in rows:
        epochs = f"{_cell(row['epochs_run'])}/{_cell(row['epochs_planned'])}"
        seconds = None if row["seconds"] is None else round(row["seconds"], 1)
        cells.append([_cell(row["trial"]), row["state"], _cell(row["value"]), *(_cell(row[p.key]) for p in params),
                      _cell(row["active_units"]), epochs, _cell(seconds)])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"value: {metric_label(metric, eval_k)}\n" + "\n".join(lines)


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    names = [name for name in rows[0] if name != "kl_per_dim"] if rows else []
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) if isinstance(v, tuple) else ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def pruning_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Trials pruned, the epochs they ran of those planned, and the training time that saved, estimated from each
    pruned trial's own seconds per epoch (``None`` for runs with a time budget, whose epochs are only a cap)."""
    pruned = [r for r in rows if r["state"] == "pruned" and r["epochs_run"] and r["epochs_planned"]]
    planned = sum(r["epochs_planned"] for r in rows if r["state"] in ("complete", "pruned") and r["epochs_planned"])
    skipped = sum(r["epochs_planned"] - r["epochs_run"] for r in pruned)
    saved: float | None = sum(
        (r["epochs_planned"] - r["epochs_run"]) * (r["train_time_s"] or 0.0) / r["epochs_run"] for r in pruned)
    if any(r["epochs_planned"] >= 1_000_000 for r in pruned):
        saved = None
    return {"pruned": sum(r["state"] == "pruned" for r in rows), "epochs_planned": planned,
            "epochs_not_run": skipped, "train_seconds_saved_estimate": saved}


def importances(study: optuna.Study, params: Sequence[Param]) -> dict[str, float] | None:
    """Optuna's parameter importances (fANOVA, normalized to sum to 1); ``None`` with fewer than two searched keys
    or too few finished trials."""
    if len(params) < 2:
        return None
    optuna = optuna_module()
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError) as exc:
        logger.info("no parameter importances yet: %s", exc)
        return None


def write_results(study: optuna.Study, spec: SweepSpec, params: Sequence[Param], out: Path) -> dict[str, Any]:
    """Write every file of the module docstring; returns the summary (also ``summary.json``)."""
    rows = trial_rows(study, params)
    atomic_write_text(out / "trials.csv", _csv_text(rows))
    finished = [r for r in rows if r["state"] == "complete"]
    best = None
    if finished:
        best_trial = study.best_trial
        best = {"trial": best_trial.number, "value": best_trial.value, "run_dir": best_trial.user_attrs.get("run_dir"),
                "params": {p.key: _plain(p.value_of(best_trial.params[p.key])) for p in params}}
        write_best_yaml(out / "best.yaml", best_trial.user_attrs["config"], best, spec, len(finished))
    counts = {state: sum(r["state"] == state for r in rows) for state in ("complete", "pruned", "fail", "running")}
    summary = {
        "study": study.study_name, "metric": spec.metric, "metric_label": metric_label(spec.metric, spec.eval_k),
        "direction": study.direction.name.lower(), "space": list(spec.space), "trials": counts, "best": best,
        "pruning": {"pruner": spec.pruner, **pruning_summary(rows)}, "importances": importances(study, params),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_plots(rows, params, spec, summary, out / "plots")
    return summary


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def write_best_yaml(path: Path, config: dict[str, Any], best: dict[str, Any], spec: SweepSpec, finished: int) -> None:
    """The best trial's config as a ``vaekit train --config`` file, with where it came from in comments."""
    settings = ", ".join(f"{k}={_cell(v)}" for k, v in best["params"].items())
    header = (
        f"# vaekit sweep: the best of {finished} finished trials by {metric_label(spec.metric, spec.eval_k)}: "
        f"{best['value']:.6g} (trial {best['trial']}: {settings})\n"
        f"# its run: {best['run_dir']}\n"
        f"# train it again: vaekit train --config {path.name}\n"
    )
    atomic_write_text(path, header + dump_yaml(config))


# -- plots ------------------------------------------------------------------------------------------------------------
def write_plots(rows: Sequence[dict[str, Any]], params: Sequence[Param], spec: SweepSpec, summary: dict[str, Any],
                folder: Path) -> None:
    """The PNG files of the module docstring (nothing when no trial has finished)."""
    finished = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    if not finished:
        return
    folder.mkdir(parents=True, exist_ok=True)
    label = metric_label(spec.metric, spec.eval_k)
    best = summary["best"]["trial"] if summary["best"] else None
    for param in params:
        _plot_metric(finished, param, label, best, summary, folder / f"metric_vs_{param.key}.png")
    latent = next((p for p in params if p.key == "model.latent_dim"), None)
    if latent is not None:
        _plot_latent(finished, latent, label, folder / "latent_dim.png")
    if summary["importances"]:
        _plot_importances(summary["importances"], label, folder / "importances.png")


def _positions(rows: Sequence[dict[str, Any]], param: Param) -> tuple[list[float], list[str] | None]:
    """x positions of the rows' values: the values themselves, or for cat the index of the value's label."""
    if param.kind != "cat":
        return [float(r[param.key]) for r in rows], None
    labels = [_cell(c) for c in param.choices]
    return [float(labels.index(_cell(r[param.key]))) for r in rows], labels


def _plot_metric(rows: Sequence[dict[str, Any]], param: Param, label: str, best: int | None, summary: dict[str, Any],
                 path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    x, ticks = _positions(rows, param)
    y = [r["value"] for r in rows]
    ax.scatter(x, y, color="tab:blue", alpha=0.8, label="finished trials")
    for xi, yi, row in zip(x, y, rows, strict=True):
        if row["trial"] == best:
            ax.scatter([xi], [yi], marker="*", s=250, color="tab:red", zorder=3, label=f"best (trial {best})")
    if ticks is not None:
        ax.set_xticks(range(len(ticks)), ticks)
    elif param.log:
        _log_axis(ax)
    counts = summary["trials"]
    ax.set(xlabel=param.key, ylabel=label, title=f"{param.describe()}\n{counts['complete']} finished, "
           f"{counts['pruned']} pruned, {counts['fail']} failed")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_latent(rows: Sequence[dict[str, Any]], param: Param, label: str, path: Path) -> None:
    """Metric, active units and sorted KL per dimension against the latent size."""
    plt = pyplot()
    import matplotlib.colors

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    x, ticks = _positions(rows, param)
    axes[0].scatter(x, [r["value"] for r in rows])
    axes[0].set(xlabel=param.key, ylabel=label, title="metric")
    stats = [(xi, r) for xi, r in zip(x, rows, strict=True) if r["active_units"] is not None]
    axes[1].scatter([xi for xi, _ in stats], [r["active_units"] for _, r in stats], color="tab:green")
    if ticks is None and stats:
        line = [min(xi for xi, _ in stats), max(xi for xi, _ in stats)]
        axes[1].plot(line, line, color="grey", linestyle="--", linewidth=1, label="all units active")
        axes[1].legend(fontsize=8)
    axes[1].set(xlabel=param.key, ylabel="active units (Var[E[z|x]] > 0.01)", title="active units (validation)")
    sizes = [r["latent_dim"] for _, r in stats if r["kl_per_dim"]]
    norm = matplotlib.colors.LogNorm(vmin=min(sizes), vmax=max(sizes) + 1e-9) if sizes else None
    for _, row in sorted(stats, key=lambda item: item[1]["latent_dim"] or 0):
        kl = sorted(row["kl_per_dim"] or [], reverse=True)
        if kl and norm is not None:
            axes[2].plot(range(1, len(kl) + 1), [max(v, 1e-4) for v in kl], color=plt.cm.viridis(norm(len(kl))),
                         marker=".", linewidth=1)
    if norm is not None:
        import matplotlib.ticker

        bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes[2], label="latent size")
        bar.ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        bar.ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[2].set(xlabel="latent dimension (sorted by KL)", ylabel="KL per dimension, nats (floored at 1e-4)",
                yscale="log", title="KL(q(z_i|x) || p(z_i)) per dimension (validation)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ticks is not None and ax is not axes[2]:
            ax.set_xticks(range(len(ticks)), ticks)
        elif param.log and ax is not axes[2]:
            _log_axis(ax)
    fig.tight_layout()
    save_figure(fig, path)


def _log_axis(ax: Any) -> None:
    """A log-scaled x axis labelled with plain numbers (2, 4, 8, ... rather than 2 x 10^0)."""
    import matplotlib.ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _plot_importances(values: dict[str, float], label: str, path: Path) -> None:
    plt = pyplot()
    names = sorted(values, key=values.__getitem__)
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (fANOVA, sums to 1)", title=f"parameter importances for\n{label}")
    ax.set_xlim(0, max(1.0, max(values.values())) if values else 1.0)
    fig.tight_layout()
    save_figure(fig, path)


def finite(value: Any) -> bool:
    """Whether a value is a finite number."""
    return isinstance(value, (int, float)) and math.isfinite(value)
