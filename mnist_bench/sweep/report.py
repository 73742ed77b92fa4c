"""What a sweep leaves in its results folder, built from the study's storage (so any worker, on any machine,
writes the same): ``sweep.md`` and ``sweep.csv`` (trial, state, parameters, objective, epochs, seconds),
``best.yaml`` (the best trial's config, ready for ``mnist-bench fit --config``), Optuna's plots as PNG files,
and one TensorBoard HPARAMS entry per trial under ``tensorboard/``."""

from __future__ import annotations

import csv
import io
import shutil
import warnings
from pathlib import Path
from typing import Any

import yaml

from mnist_bench.utils import atomic_path, write_json_atomic

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def trial_rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        intermediate = t.intermediate_values
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "params": dict(t.params),
                "value": t.value if t.values else None,
                "last_reported": intermediate[max(intermediate)] if intermediate else None,
                "epochs": t.user_attrs.get("epochs"),
                "fit_s": t.user_attrs.get("fit_s"),
                # the whole trial as the study saw it (start-up included; a pruned run has no fit time of its
                # own)
                "trial_s": t.duration.total_seconds() if t.duration is not None else None,
                "host": (t.user_attrs.get("worker") or {}).get("host"),
                "run_dir": t.user_attrs.get("run_dir"),
                "error": t.user_attrs.get("error"),
                "retry_of": t.system_attrs.get("failed_trial"),
            }
        )
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table_markdown(study: Any, rows: list[dict[str, Any]], header: str) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    objective = study.user_attrs.get("objective", "objective")
    lines = [
        header,
        "",
        "| trial | state | "
        + " | ".join(f"`{k}`" for k in keys)
        + f" | {objective} | epochs | trial s | note |",
        "|---:|---|" + "---:|" * len(keys) + "---:|---:|---:|---|",
    ]
    best = _best(study)
    for r in rows:
        note = r["error"] or ""
        if best is not None and r["trial"] == best.number:
            note = "**best**"
        elif r["state"] == "pruned" and r["last_reported"] is not None:
            note = f"pruned at {r['last_reported']:.4g}"
        lines.append(
            f"| {r['trial']} | {r['state']} | "
            + " | ".join(_fmt(r["params"].get(k)) for k in keys)
            + f" | {_fmt(r['value'])} | {_fmt(r['epochs'])} | {_fmt(r['trial_s'] and round(r['trial_s'], 1))}"
            f" | {note} |"
        )
    return "\n".join(lines) + "\n"


def table_csv(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["trial", "state", *keys, "value", "epochs", "fit_s", "trial_s", "host", "run_dir", "error"]
    )
    for r in rows:
        writer.writerow(
            [
                r["trial"],
                r["state"],
                *(r["params"].get(k) for k in keys),
                r["value"],
                r["epochs"],
                r["fit_s"],
                r["trial_s"],
                r["host"],
                r["run_dir"],
                r["error"],
            ]
        )
    return out.getvalue()


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def best_config(study: Any) -> str | None:
    """The best trial's config as its run saved it, made portable: runs go to ./lightning_logs again, no
    checkpoint is resumed. ``mnist-bench fit --config best.yaml`` trains it."""
    best = _best(study)
    if best is None or not best.user_attrs.get("config_yaml"):
        return None
    config = yaml.safe_load(best.user_attrs["config_yaml"])
    config.get("trainer", {})["default_root_dir"] = None
    config.pop("ckpt_path", None)
    params = ", ".join(f"{k}={v}" for k, v in best.params.items())
    head = (
        f"# The best trial ({best.number}) of sweep {study.study_name!r}: "
        f"{study.user_attrs.get('objective', 'objective')} {best.value:.4f}\n# with {params}\n"
    )
    return head + yaml.safe_dump(config, sort_keys=False)


def save_plots(study: Any, out: Path) -> list[str]:
    """Optuna's optimization history and parameter importances (matplotlib), where the study allows them."""
    import optuna.visualization.matplotlib as ovm

    from mnist_bench.plots import plt

    written, notes = [], []
    plots = (
        ("optimization_history.png", ovm.plot_optimization_history),
        ("param_importances.png", ovm.plot_param_importances),
    )
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = plot(study)
            except (
                ValueError,
                RuntimeError,
                ZeroDivisionError,
            ) as err:  # e.g. importances of fewer than 2 trials
                notes.append(f"{name}: {err}")
                continue
        figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(name)
    return written + [f"not drawn: {n}" for n in notes]


def log_hparams(study: Any, rows: list[dict[str, Any]], out: Path) -> None:
    """One HPARAMS entry per finished trial in ``out/tensorboard`` (written afresh each time)."""
    from torch.utils.tensorboard import SummaryWriter

    folder = out / "tensorboard"
    shutil.rmtree(folder, ignore_errors=True)
    objective = "hparams/" + str(study.user_attrs.get("objective", "objective")).replace("/", "_")
    with SummaryWriter(log_dir=str(folder)) as writer:
        for r in rows:
            if r["state"] not in ("complete", "pruned"):
                continue
            value = r["value"] if r["value"] is not None else r["last_reported"]
            params = {
                k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in r["params"].items()
            }
            writer.add_hparams(
                {**params, "state": r["state"]},
                {objective: value if value is not None else float("nan")},
                run_name=f"trial_{r['trial']}",
            )


def write_report(study: Any, out: Path, header: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    for name, text in (("sweep.md", table_markdown(study, rows, header)), ("sweep.csv", table_csv(rows))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    best = best_config(study)
    if best is not None:
        with atomic_path(out / "best.yaml") as tmp:
            tmp.write_text(best)
    plots = save_plots(study, out)
    log_hparams(study, rows, out)
    best_trial = _best(study)
    summary = {
        "study": study.study_name,
        "objective": study.user_attrs.get("objective"),
        "direction": study.direction.name.lower(),
        "header": header,
        "states": {s.lower(): sum(r["state"] == s.lower() for r in rows) for s in STATES},
        "best": (
            None
            if best_trial is None
            else {"trial": best_trial.number, "value": best_trial.value, "params": best_trial.params}
        ),
        "plots": plots,
        "trials": rows,
    }
    write_json_atomic(out / "sweep.json", summary)
    return summary
