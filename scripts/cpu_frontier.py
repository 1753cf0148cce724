"""The paper's claims at CPU scale: fidelity against diversity for every objective, CSD's weightings and temperature.

    HF_HUB_OFFLINE=1 python scripts/cpu_frontier.py [--seeds 10 20 30] [--lr-grid 1e-4 3e-4 1e-3] [--threads N]
        [--out docs/results] [hydra overrides, e.g. logger=wandb]        (make frontier: set-up + this)

The runs of scripts/mini_table1.py (Table 1's ten objectives, each at its learning rate chosen on the validation
prompts, 3 seeds, the same batches per seed, 96 steps x 8, bf16, the release's evaluation decoding), plus CSD's
weightings (U,S), (T,S) and mix (Figure 3, Table 3) and CSD (S,S) at temperature 0.5, 1.5 and 2.0 (Figure 5a; 1.0 is
the `csd` row), which train at CSD's chosen learning rate. Both scripts share outputs/cpu_sweep/, so a run either
finished is read back, and an interrupted sweep resumes where it stopped when the command is run again.

Per run, on the 64 test prompts: ROUGE-L (fidelity), distinct-1/2, self-BLEU and mean words (diversity, length) of one
sampled response per prompt, and the student's NLL of the teacher's references (csd/sweep.py).

Outputs: <out>/cpu_frontier.json (settings, lr choice, per-row mean/std, every run, the Pareto sets, the claim
checks), cpu_frontier.md (tables + the checks in words) and cpu_frontier.png (the fidelity-diversity plane with error
bars and the Pareto front; the weighting and temperature curves as Figures 3 and 5a). With logger=wandb the same
tables and figures go to one W&B run (group cpu_frontier; the training runs log to group cpu_sweep).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mini_table1  # noqa: E402

from csd.inputs import one_line_errors  # noqa: E402
from csd.sweep import REFERENCE_ROWS, pareto_set  # noqa: E402

WEIGHTINGS = {"csd_US": ("loss=csd", "loss.weighting=US"), "csd_TS": ("loss=csd", "loss.weighting=TS"),
              "csd_mix": ("loss=csd", "loss.weighting=MM")}
TEMPERATURES = {f"csd_tau{t:g}": ("loss=csd", f"loss.temperature={t}") for t in (0.5, 1.5, 2.0)}
VARIANTS = {**WEIGHTINGS, **TEMPERATURES}
WEIGHTING_ROWS = {"(S,S)": "csd", "(U,S)": "csd_US", "(T,S)": "csd_TS", "mix": "csd_mix"}
TEMPERATURE_ROWS = {0.5: "csd_tau0.5", 1.0: "csd", 1.5: "csd_tau1.5", 2.0: "csd_tau2"}
KL_FAMILY = ("fkl", "rkl", "sfkl", "srkl", "js")
PLANES = {"distinct_2": ("distinct_2", +1), "self_bleu": ("self_bleu", -1)}  # diversity axis, sign (+1: higher better)


def plane_points(rows: dict, key: str, sign: int, students_only: bool = True) -> dict[str, tuple[float, float]]:
    """row -> (ROUGE-L, signed diversity) means, both higher = better."""
    return {row: (s["rougeL"]["mean"], sign * s[key]["mean"]) for row, s in rows.items()
            if not (students_only and row in REFERENCE_ROWS)}


def per_seed_front_counts(runs: list[dict], key: str, sign: int) -> dict[str, int]:
    """row -> in how many seeds it is on the Pareto front of that seed's runs."""
    counts: dict[str, int] = {}
    for seed in sorted({r["seed"] for r in runs}):
        points = {r["row"]: (r["scores"]["rougeL"], sign * r["scores"][key]) for r in runs
                  if r["seed"] == seed and r["row"] not in REFERENCE_ROWS}
        for row in pareto_set(points):
            counts[row] = counts.get(row, 0) + 1
    return counts


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and a != b


def claims(rows: dict, fronts: dict) -> dict:
    """The paper's claims, checked on the means (each entry: the numbers and a yes/no)."""
    table1 = [r for r in mini_table1.OBJECTIVES if r in rows]
    ranking = sorted(table1, key=lambda r: -rows[r]["rougeL"]["mean"])
    out = {"rougeL_ranking": ranking, "csd_highest_rougeL": bool(ranking) and ranking[0] == "csd"}
    if "csd" in rows:
        points = plane_points(rows, "distinct_2", +1)
        out["csd_on_front_distinct_2"] = "csd" in fronts["distinct_2"]["front"]
        out["csd_on_front_self_bleu"] = "csd" in fronts["self_bleu"]["front"]
        out["kl_rows_dominating_csd"] = [r for r in KL_FAMILY if r in points and dominates(points[r], points["csd"])]
        out["kl_rows_dominated_by_csd"] = [r for r in KL_FAMILY if r in points and dominates(points["csd"], points[r])]
        out["csd_family_on_front"] = [r for r in fronts["distinct_2"]["front"] if r.startswith("csd")]
    taus = {t: rows[r]["rougeL"]["mean"] for t, r in TEMPERATURE_ROWS.items() if r in rows}
    if len(taus) > 1:
        out["best_temperature"] = max(taus, key=taus.get)
        out["tau_1.5_best"] = out["best_temperature"] == 1.5
    weightings = {w: r for w, r in WEIGHTING_ROWS.items() if r in rows}
    if len(weightings) > 2:
        fid = [rows[r]["rougeL"]["mean"] for r in weightings.values()]
        div = [rows[r]["distinct_2"]["mean"] for r in weightings.values()]
        constant = len(set(fid)) == 1 or len(set(div)) == 1
        out["weighting_rougeL_distinct2_correlation"] = None if constant else statistics.correlation(fid, div)
        out["weighting_best_rougeL"] = max(weightings, key=lambda w: rows[weightings[w]]["rougeL"]["mean"])
    return out


def analyse(results: dict) -> dict:
    fronts = {}
    for name, (key, sign) in PLANES.items():
        fronts[name] = {"front": pareto_set(plane_points(results["rows"], key, sign)),
                        "seeds_on_front": per_seed_front_counts(results["runs"], key, sign)}
    return {"pareto": fronts, "claims": claims(results["rows"], fronts)}


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, front = results["rows"], set(results["pareto"]["distinct_2"]["front"])
    fig, (plane, weighting, temperature) = plt.subplots(1, 3, figsize=(16, 4.8),
                                                        gridspec_kw={"width_ratios": [2, 1, 1]})
    for row, s in rows.items():
        color = "tab:gray" if row in REFERENCE_ROWS else "tab:red" if row.startswith("csd") else "tab:blue"
        x, y = 100 * s["distinct_2"]["mean"], s["rougeL"]["mean"]
        edge = "black" if row in front else color
        plane.errorbar(x, y, xerr=100 * s["distinct_2"]["std"], yerr=s["rougeL"]["std"], fmt="o", color=color,
                       capsize=2, markersize=5 if row in front else 3, markeredgecolor=edge)
        plane.annotate(row, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    line = sorted((100 * rows[r]["distinct_2"]["mean"], rows[r]["rougeL"]["mean"]) for r in front)
    plane.plot(*zip(*line), "k--", linewidth=0.8, label="Pareto front (students, means)")
    plane.set(xlabel="distinct-2 (%) of sampled responses (diversity)", ylabel="ROUGE-L (fidelity)",
              title=f"Fidelity vs diversity, mean ± std over {len(results['settings']['seeds'])} seeds")
    plane.legend(fontsize=7, loc="lower left")
    names = [w for w, r in WEIGHTING_ROWS.items() if r in rows]
    xs = range(len(names))
    weighting.bar([x - 0.2 for x in xs], [rows[WEIGHTING_ROWS[w]]["rougeL"]["mean"] for w in names], 0.4,
                  yerr=[rows[WEIGHTING_ROWS[w]]["rougeL"]["std"] for w in names], capsize=2, label="ROUGE-L")
    weighting.bar([x + 0.2 for x in xs], [100 * rows[WEIGHTING_ROWS[w]]["distinct_2"]["mean"] / 4 for w in names], 0.4,
                  yerr=[100 * rows[WEIGHTING_ROWS[w]]["distinct_2"]["std"] / 4 for w in names], capsize=2,
                  label="distinct-2 (%) / 4")
    weighting.set_xticks(list(xs), names)
    weighting.set(title="CSD weighting (Figure 3)", ylabel="score")
    weighting.legend(fontsize=7)
    taus = [t for t, r in TEMPERATURE_ROWS.items() if r in rows]
    temperature.errorbar(taus, [rows[TEMPERATURE_ROWS[t]]["rougeL"]["mean"] for t in taus],
                         yerr=[rows[TEMPERATURE_ROWS[t]]["rougeL"]["std"] for t in taus], marker="o", capsize=2,
                         label="ROUGE-L")
    twin = temperature.twinx()
    twin.errorbar(taus, [100 * rows[TEMPERATURE_ROWS[t]]["distinct_2"]["mean"] for t in taus],
                  yerr=[100 * rows[TEMPERATURE_ROWS[t]]["distinct_2"]["std"] for t in taus], marker="s", capsize=2,
                  color="tab:orange", label="distinct-2 (%)")
    temperature.set(title="CSD temperature (Figure 5a)", xlabel="τ", ylabel="ROUGE-L")
    twin.set_ylabel("distinct-2 (%)", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def claims_text(results: dict) -> list[str]:
    c, rows = results["claims"], results["rows"]
    mean = lambda row, key="rougeL": rows[row][key]["mean"]  # noqa: E731
    lines = ["## The paper's claims, checked on these runs (means over seeds; computed by the script)", ""]
    if c.get("rougeL_ranking"):
        rank = c["rougeL_ranking"].index("csd") + 1 if "csd" in c["rougeL_ranking"] else None
        lines.append(f"- Highest ROUGE-L among Table 1's objectives: **{c['rougeL_ranking'][0]}** "
                     f"({mean(c['rougeL_ranking'][0]):.2f}); CSD (S,S) ranks {rank} of {len(c['rougeL_ranking'])}"
                     f" ({mean('csd'):.2f}). Claim 'CSD has the highest ROUGE-L': "
                     f"{'holds' if c['csd_highest_rougeL'] else 'does not hold'} here.")
    if "csd_on_front_distinct_2" in c:
        counts = results["pareto"]["distinct_2"]["seeds_on_front"]
        lines.append(f"- Pareto front of ROUGE-L against distinct-2 (students): "
                     f"{', '.join(results['pareto']['distinct_2']['front'])}; CSD (S,S) "
                     f"{'is' if c['csd_on_front_distinct_2'] else 'is not'} on it (on the per-seed front in "
                     f"{counts.get('csd', 0)} of {len(results['settings']['seeds'])} seeds). Against self-BLEU: "
                     f"{', '.join(results['pareto']['self_bleu']['front'])}.")
        lines.append(f"- KL-family rows ({', '.join(KL_FAMILY)}) that dominate CSD (S,S) in that plane: "
                     f"{', '.join(c['kl_rows_dominating_csd']) or 'none'}; dominated by CSD (S,S): "
                     f"{', '.join(c['kl_rows_dominated_by_csd']) or 'none'}.")
    if "best_temperature" in c:
        lines.append(f"- Temperature: the best ROUGE-L is at τ = {c['best_temperature']:g} "
                     f"({', '.join(f'τ {t:g}: {mean(r):.2f}' for t, r in TEMPERATURE_ROWS.items() if r in rows)}); "
                     f"the paper's τ = 1.5 {'is' if c['tau_1.5_best'] else 'is not'} best here.")
    if "weighting_best_rougeL" in c:
        n = sum(r in rows for r in WEIGHTING_ROWS.values())
        correlation = c["weighting_rougeL_distinct2_correlation"]
        lines.append(f"- Weightings: best ROUGE-L {c['weighting_best_rougeL']}; correlation of ROUGE-L with distinct-2 "
                     f"across the {n} weightings " + ("undefined (a constant column)" if correlation is None else
                                                      f"{correlation:+.2f}") +
                     " (negative = the weightings trade fidelity for diversity).")
    return lines


def report(results: dict, out: Path) -> str:
    front = set(results["pareto"]["distinct_2"]["front"])
    table = mini_table1.markdown_table(results["rows"])
    table = table[:2] + [line.replace(f"| {row} |", f"| {row}{' ★' if row in front else ''} |", 1)
                         for line, row in zip(table[2:], results["rows"])]
    markdown = "\n".join([
        "# CPU fidelity–diversity frontier", "", mini_table1.settings_text(results),
        "★: on the Pareto front of ROUGE-L against distinct-2 (means; both higher = better; students only).", "",
        *table, *mini_table1.selection_text(results["lr_selection"]), "", *claims_text(results), "",
        "![frontier](cpu_frontier.png)", ""])
    (out / "cpu_frontier.md").write_text(markdown, encoding="utf-8")
    return markdown


def log_wandb(results: dict, png: Path, logger_cfg) -> None:
    """One W&B run (group cpu_frontier, job_type results): the rows as a Table, the plane, both curves, the PNG."""
    from csd.logger import finish, start_wandb, wandb_dir, wandb_mode, warn_once

    run = start_wandb(project=logger_cfg.project, entity=logger_cfg.entity, group="cpu_frontier",
                      name="cpu_frontier-results", job_type="results", tags=["results", "cpu_frontier"],
                      mode=wandb_mode(logger_cfg.mode), dir=wandb_dir(png.parent), config=results["settings"])
    if run is None:
        return
    try:
        import wandb

        front = set(results["pareto"]["distinct_2"]["front"])
        columns = ["row", "lr", "seeds", "pareto", *(f"{k}_{s}" for k, _, _ in mini_table1.COLUMNS
                                                      for s in ("mean", "std"))]
        data = [[row, s.get("lr"), len(s["seeds"]), row in front,
                 *(s[k][stat] for k, _, _ in mini_table1.COLUMNS for stat in ("mean", "std"))]
                for row, s in results["rows"].items()]
        table = wandb.Table(columns=columns, data=data, allow_mixed_types=True)
        rows = results["rows"]
        curve = wandb.Table(columns=["tau", "rougeL"], data=[[t, rows[r]["rougeL"]["mean"]] for t, r in
                                                             TEMPERATURE_ROWS.items() if r in rows])
        bars = wandb.Table(columns=["weighting", "rougeL"], data=[[w, rows[r]["rougeL"]["mean"]] for w, r in
                                                                  WEIGHTING_ROWS.items() if r in rows])
        run.log({"frontier": table,
                 "figures/fidelity_diversity": wandb.plot.scatter(table, "distinct_2_mean", "rougeL_mean",
                                                                  title="ROUGE-L vs distinct-2"),
                 "figures/temperature": wandb.plot.line(curve, "tau", "rougeL", title="CSD temperature"),
                 "figures/weighting": wandb.plot.bar(bars, "weighting", "rougeL", title="CSD weighting"),
                 "figures/cpu_frontier": wandb.Image(str(png))})
        run.summary.update({"claims": results["claims"], "pareto": results["pareto"]})
        print(f"W&B: cpu_frontier -> run {run.id}")
    except Exception as error:  # noqa: BLE001 - the local files are written already; W&B is extra
        warn_once(f"W&B could not log the frontier ({type(error).__name__}: {error})")
    finish(run)


def main(argv: list[str]) -> dict:
    args, overrides = mini_table1.parser(__doc__.splitlines()[0]).parse_known_args(argv)
    started = time.time()
    sweep = mini_table1.make_sweep(args, overrides)
    grid = mini_table1.parse_grid(args.lr_grid)
    rows = {**mini_table1.OBJECTIVES, **VARIANTS}
    outcome = mini_table1.run_rows(sweep, rows, args.seeds, grid, lr_from={row: "csd" for row in VARIANTS},
                                   reference_seeds=args.reference_seeds, select_seed=args.select_seed,
                                   edge_extensions=args.edge_extensions)
    split = "test" if "test" in args.splits else args.splits[-1]
    results = mini_table1.results_of(sweep, outcome, args.seeds, grid,
                                     " ".join(["python scripts/cpu_frontier.py", *argv]), started, split)
    results.update(analyse(results))
    (args.out / "cpu_frontier.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    figure(results, args.out / "cpu_frontier.png")
    markdown = report(results, args.out)
    if sweep.base.logger.name == "wandb":
        log_wandb(results, args.out / "cpu_frontier.png", sweep.base.logger)
    print(markdown)
    return results


if __name__ == "__main__":
    with one_line_errors("cpu_frontier.py"):  # a bad override, model path or data file: one line, no traceback
        main(sys.argv[1:])
