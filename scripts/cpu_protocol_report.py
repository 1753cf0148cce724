"""The report of scripts/cpu_protocol.py, from its run records: cpu_protocol.json, .md and .png.

    python scripts/cpu_protocol_report.py [--json docs/results/cpu_protocol.json] [--out docs/results]

(as a command: the .md and .png again from a cpu_protocol.json; scripts/cpu_protocol.py writes all three itself.)

Works on partial records: the runs not finished are listed, the tables and curves hold the finished ones, and a claim
that needs a missing objective says so instead of a verdict. The claim checks (``claims``) are computed here, on the
test scores at the best checkpoint (means over seeds), against the 96-step table of docs/results (cpu_frontier.json,
else mini_table1.json) where that table was made with the same pair and settings.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_frontier  # noqa: E402
import mini_table1  # noqa: E402

from csd.sweep import aggregate, pareto_set  # noqa: E402

METRICS = ("rougeL", "distinct_1", "distinct_2", "self_bleu", "mean_words", "nll")
COLUMNS = (("rougeL", "ROUGE-L", 1), ("distinct_2", "distinct-2", 100), ("self_bleu", "self-BLEU", 1), ("nll", "NLL", 1))


def matching_results(common: Sequence[str], decoding: dict, splits: Sequence[str],
                     paths: Sequence[Path]) -> tuple[Optional[dict], Optional[str]]:
    """The first results JSON (mini_table1 / cpu_frontier) made with these sweep settings (its overrides but the
    logger's, decoding and splits), and its path."""
    def numbers_of(overrides) -> list[str]:
        return [o for o in overrides or () if not o.lstrip("+~").startswith("logger")]
    for path in paths:
        if path.exists():
            results = json.loads(path.read_text(encoding="utf-8"))
            settings = results.get("settings", {})
            if (numbers_of(settings.get("overrides")), settings.get("decoding"), settings.get("splits")) == \
                    (numbers_of(common), decoding, list(splits)):
                return results, str(path)
    return None, None


def settings_of(protocol, args, command: str, search_source: Optional[str], table_96: Optional[str],
                machine: str) -> dict:
    train = protocol.base.train
    return {"epochs": int(train.epochs), "max_steps": args.max_steps, "batch_size": int(train.batch_size),
            "precision": protocol.precision, "seeds": list(args.seeds), "objectives": list(args.objectives),
            "validation": {"prompts": int(train.eval_generate), "best_metric": train.best_metric,
                           "decoding": "the data config's sampling, no n-gram blocking (csd/distiller.py)"},
            "test_decoding": protocol.decoding, "lr_search": {
                "steps": args.search_steps, "seed": args.search_seed, "grid": mini_table1.parse_grid(args.lr_grid),
                "edge_extensions": args.edge_extensions, "scores_from": search_source},
            "table_96": table_96, "overrides": protocol.common, "teacher_cache": train.teacher_cache,
            "threads": torch.get_num_threads(), "machine": machine, "command": command}


def curves(records: Sequence[dict]) -> dict:
    """{row: {"epoch": [...], "mean": [...], "low": [...], "high": [...], "n": [...]}}: validation ROUGE-L after each
    epoch over the row's seeds (low/high: the lowest and highest seed)."""
    by_row: dict[str, dict[float, list[float]]] = {}
    for record in records:
        for entry in record["epochs"]:
            by_row.setdefault(record["row"], {}).setdefault(entry["epoch"], []).append(entry["rougeL"])
    return {row: {"epoch": sorted(epochs), "mean": [statistics.fmean(epochs[e]) for e in sorted(epochs)],
                  "low": [min(epochs[e]) for e in sorted(epochs)], "high": [max(epochs[e]) for e in sorted(epochs)],
                  "n": [len(epochs[e]) for e in sorted(epochs)]} for row, epochs in by_row.items()}


def peak_epochs(records: Sequence[dict], curve: dict) -> dict:
    """{row: {"mean_curve": the epoch where the mean validation ROUGE-L peaks (the first of equals), "seeds": {seed:
    best epoch}}}."""
    return {row: {"mean_curve": c["epoch"][max(range(len(c["mean"])), key=lambda i: c["mean"][i])],
                  "seeds": {str(r["seed"]): r["best_epoch"] for r in records if r["row"] == row}}
            for row, c in curve.items()}


def as_runs(records: Sequence[dict], which: str) -> list[dict]:
    """The records in the sweep's shape ("splits") and the frontier's ("scores"), at best/ or at the last step."""
    return [{"row": r["row"], "seed": r["seed"], "lr": r["lr"], "splits": {"test": r["test"][which]},
             "scores": r["test"][which]} for r in records]


def claims(best: dict, table_96: dict, runs: list[dict]) -> dict:
    """CSD (S,S)'s ROUGE-L rank among the objectives in both tables, at 96 steps and after the protocol (best checkpoint),
    and whether it is on the fidelity-diversity front (cpu_frontier.PLANES: ROUGE-L against distinct-2, and against
    self-BLEU) of the protocol's objectives, per mean and per seed. A check that cannot be made says why."""
    out: dict = {}
    common = [row for row in best if row in table_96]
    if "csd" in common and len(common) > 1:
        ranking = {name: sorted(common, key=lambda r: -rows[r]["rougeL"]["mean"])
                   for name, rows in (("protocol", best), ("96_steps", table_96))}
        out.update({f"ranking_{name}": order for name, order in ranking.items()},
                   **{f"csd_rank_{name}": order.index("csd") + 1 for name, order in ranking.items()})
        out["csd_rank_changed"] = out["csd_rank_protocol"] != out["csd_rank_96_steps"]
    else:
        why = ("no 96-step table with these settings" if not table_96 else
               "no finished CSD (S,S) run" if "csd" not in best else
               "CSD (S,S) is not in the 96-step table" if "csd" not in table_96 else "one objective only")
        out["rank_check"] = f"not computable: {why}"
    if "csd" not in best:
        out["front_check"] = "not computable: no finished CSD (S,S) run"
        return out
    for plane, (key, sign) in cpu_frontier.PLANES.items():
        front = pareto_set(cpu_frontier.plane_points(best, key, sign))
        out[f"front_{plane}_protocol"] = front
        out[f"csd_on_front_{plane}_protocol"] = "csd" in front
        out[f"csd_seeds_on_front_{plane}"] = cpu_frontier.per_seed_front_counts(runs, key, sign).get("csd", 0)
        if "csd" in common:
            front_96 = pareto_set(cpu_frontier.plane_points({r: table_96[r] for r in common}, key, sign))
            out[f"front_{plane}_96_steps"] = front_96
            out[f"csd_on_front_{plane}_96_steps"] = "csd" in front_96
    out["highest_rougeL_protocol"] = max(best, key=lambda r: best[r]["rougeL"]["mean"])
    out["csd_highest_rougeL_protocol"] = out["highest_rougeL_protocol"] == "csd"
    return out


def compute_of(record: dict) -> float:
    """A run's seconds: its wall time; for a run resumed from a checkpoint, whose wall time is its last process's
    alone, the time its epochs took (training and validation, kept in the checkpoints across processes) plus its test
    scoring, when that is more. Steps trained again after an interruption are not counted; a record's ``threads`` are
    its last process's."""
    epochs = sum(e.get("train_s", 0) + e.get("eval_s", 0) for e in record.get("epochs", ()))
    return max(record.get("wall_s", 0), epochs + sum(record.get("test_s", {}).values()))


def best_validation(record: dict) -> float:
    """A protocol run's best validation ROUGE-L over its epochs (the checkpoint best/ keeps)."""
    return max(e["rougeL"] for e in record["epochs"])


def probe_lines_of(probes: Sequence[dict], probe_records: Sequence[dict], records: Sequence[dict],
                   best: dict) -> list[dict]:
    """Each probe (cpu_protocol.rising_probes) beside the same row and seed at the chosen rate: best validation
    ROUGE-L over the epochs and test ROUGE-L at the best checkpoint; "higher_validation" is the protocol's own
    criterion. "rank_chosen": the row's ROUGE-L rank among the means at the best checkpoint (``best``);
    "rank_with_probe": its rank were its mean the probe's one test score."""
    def rank(row: str, value: float) -> int:
        return 1 + sum(stats["rougeL"]["mean"] > value for other, stats in best.items() if other != row)
    out = []
    for probe in probes:
        record = next((r for r in probe_records if (r["row"], r["seed"], r["lr"]) ==
                       (probe["row"], probe["seed"], probe["lr"])), None)
        chosen = next(r for r in records if (r["row"], r["seed"]) == (probe["row"], probe["seed"]))
        line = {"row": probe["row"], "seed": probe["seed"], "lr": probe["lr"], "chosen_lr": chosen["lr"],
                "chosen_best_validation": best_validation(chosen), "chosen_best_epoch": chosen["best_epoch"],
                "chosen_test_rougeL": chosen["test"]["best"]["rougeL"], "finished": record is not None}
        if record is not None:
            line.update(best_validation=best_validation(record), best_epoch=record["best_epoch"],
                        test_rougeL=record["test"]["best"]["rougeL"],
                        higher_validation=best_validation(record) > best_validation(chosen), of=len(best),
                        rank_chosen=rank(probe["row"], best[probe["row"]]["rougeL"]["mean"]),
                        rank_with_probe=rank(probe["row"], record["test"]["best"]["rougeL"]))
        out.append(line)
    return out


def results_of(settings: dict, selections: dict, runs: Sequence[dict], records: Sequence[dict], table_96: dict,
               started: float, other_records: Sequence[dict] = (), probes: Sequence[dict] = (),
               probe_records: Sequence[dict] = ()) -> dict:
    """Everything the report shows, from the planned runs and the finished records. ``other_records``: runs at rates a
    budget check compared but did not choose (cpu_protocol.other_rate_points), ``probe_records``: the finished
    ``probes`` (neither are planned runs): kept whole in "other_rate_runs" and "probe_runs" and counted in the
    compute, left out of the tables."""
    found = {(r["row"], r["seed"]) for r in records}
    missing = [{"row": run["row"], "seed": run["seed"], "lr": run["lr"],
                "why": "not finished" if run["lr"] else "its learning rate is undecided: " + selections.get(
                    run["row"], {}).get("undecided", "a search run is missing")}
               for run in runs if (run["row"], run["seed"]) not in found]
    curve = curves(records)
    best, last = aggregate(as_runs(records, "best"), metrics=METRICS), aggregate(as_runs(records, "last"), metrics=METRICS)
    table = {row: table_96[row] for row in best if row in table_96}
    return {"settings": settings, "lr_selection": selections, "runs": list(records),
            "other_rate_runs": list(other_records), "probe_runs": list(probe_records),
            "probes": probe_lines_of(probes, probe_records, records, best), "missing": missing,
            "validation_curves": curve, "peak_epoch": peak_epochs(records, curve), "test_best": best,
            "test_last": last, "table_96": table, "claims": claims(best, table, as_runs(records, "best")),
            "compute_s": round(sum(map(compute_of, [*records, *other_records, *probe_records])) +
                               sum(s.get("search_s", 0) for s in selections.values()), 1),
            "run_core_s": round(sum(compute_of(r) * r["threads"] for r in [*records, *other_records, *probe_records]
                                    if r.get("threads")), 1),
            "runs_without_threads": sum(not r.get("threads") for r in [*records, *other_records, *probe_records]),
            "wall_s": round(time.time() - started, 1)}


# ---------------------------------------------------------------------- markdown, figure
def cell(stats: Optional[dict], scale: float = 1) -> str:
    return "" if stats is None else mini_table1.format_cell(stats, scale)


def threads_line(records: Sequence[dict]) -> str:
    """'2 (csd seed 10, ...); 1 (...)': the torch threads each run trained with, as its record has them."""
    groups: dict = {}
    for r in records:
        groups.setdefault(r.get("threads", "not recorded"), []).append(f"{r['row']} seed {r['seed']}")
    return "; ".join(f"{n} ({', '.join(runs)})" for n, runs in groups.items()) or "no runs yet"


def selection_lines(selections: dict) -> list[str]:
    """The lr table: each row's short-search scores, the rate chosen and why; a row checked at the protocol's budget
    (cpu_protocol.check_edges) gets a second line with its best validation scores over the epochs."""
    lines = ["| objective | lr tried: validation ROUGE-L (where the score comes from) | chosen | why |",
             "|---|---|---|---|"]
    for row, sel in selections.items():
        chosen = f"{sel['chosen']:g}" if "chosen" in sel else "undecided"
        if "from" in sel:
            lines.append(f"| {row} | CSD (S,S)'s rate, as in the frontier | {chosen} | {sel.get('undecided', '')} |")
        elif "validation" not in sel:
            lines.append(f"| {row} | {sel['undecided']} | | |")
        else:
            tried = " · ".join(f"{lr}: {v:.2f} ({sel['sources'].get(lr, '?')})" for lr, v in sel["validation"].items())
            short = sel.get("search_chosen", sel.get("chosen"))
            lines.append(f"| {row} | {tried} | {short:g} | {sel['reason']} |")
        if "budget_check" in sel:
            check = sel["budget_check"]
            scores = " · ".join(f"{lr}: {v:.2f}" for lr, v in check["best_validation"].items())
            lines.append(f"| {row}, checked over the protocol's epochs (seed {check['seed']}; best validation ROUGE-L "
                         f"of the epochs) | {scores or 'no run finished yet'} | {chosen} | "
                         f"{check.get('reason') or sel.get('undecided', '')} |")
    return lines


def curve_lines(results: dict) -> list[str]:
    curve, peaks = results["validation_curves"], results["peak_epoch"]
    rows = list(curve)
    epochs = sorted({e for c in curve.values() for e in c["epoch"]})
    lines = ["| epoch | " + " | ".join(rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for epoch in epochs:
        cells = []
        for row in rows:
            c = curve[row]
            if epoch in c["epoch"]:
                i = c["epoch"].index(epoch)
                cells.append(f"{c['mean'][i]:.2f}" + (f" [{c['low'][i]:.2f}, {c['high'][i]:.2f}]" if c["n"][i] > 1 else ""))
            else:
                cells.append("")
        lines.append(f"| {epoch:g} | " + " | ".join(cells) + " |")
    lines.append("| **peak** (mean curve; per seed) | " + " | ".join(
        f"{peaks[r]['mean_curve']:g} ({', '.join(f'{e:g}' for e in peaks[r]['seeds'].values())})" for r in rows) + " |")
    return lines


def table_lines(results: dict) -> list[str]:
    best, last, table_96 = results["test_best"], results["test_last"], results["table_96"]
    head = " | ".join(f"{label} | {label} 96 steps" for _, label, _ in COLUMNS)
    lines = ["| objective | lr | " + head + " | ROUGE-L at the last step | seeds |", "|---" * (2 * len(COLUMNS) + 4) + "|"]
    for row, stats in best.items():
        cells = " | ".join(f"{cell(stats[k], scale)} | {cell(table_96.get(row, {}).get(k), scale)}"
                           for k, _, scale in COLUMNS)
        lines.append(f"| {row} | {stats['lr']:g} | {cells} | {cell(last[row]['rougeL'])} | {len(stats['seeds'])} |")
    return lines


def claim_lines(results: dict) -> list[str]:
    c, epochs = results["claims"], f"{results['settings']['epochs']} epochs"
    lines = []
    if "rank_check" in c:
        lines.append(f"- CSD (S,S)'s rank between the 96-step table and {epochs}: {c['rank_check']}.")
    else:
        n = len(c["ranking_protocol"])
        lines.append(f"- ROUGE-L rank of CSD (S,S) among the {n} objectives in both tables: {c['csd_rank_96_steps']} at "
                     f"96 steps ({', '.join(c['ranking_96_steps'])}), {c['csd_rank_protocol']} at {epochs} "
                     f"({', '.join(c['ranking_protocol'])}): the rank "
                     f"**{'changes' if c['csd_rank_changed'] else 'does not change'}**"
                     + (f" ({'up' if c['csd_rank_protocol'] < c['csd_rank_96_steps'] else 'down'})"
                        if c["csd_rank_changed"] else "") + ".")
    if "front_check" in c:
        lines.append(f"- Fidelity-diversity front: {c['front_check']}.")
        return lines
    seeds = len({r["seed"] for r in results["runs"] if r["row"] == "csd"})  # the seeds CSD (S,S) has finished
    for plane, label in (("distinct_2", "distinct-2"), ("self_bleu", "self-BLEU")):
        line = (f"- Front of ROUGE-L against {label} at {epochs} (these objectives, means): "
                f"{', '.join(c[f'front_{plane}_protocol'])}; CSD (S,S) "
                f"**{'is' if c[f'csd_on_front_{plane}_protocol'] else 'is not'}** "
                f"on it (on the per-seed front in {c[f'csd_seeds_on_front_{plane}']} of its {seeds} finished seed(s))")
        if f"csd_on_front_{plane}_96_steps" in c:
            line += (f"; at 96 steps (same objectives) it {'is' if c[f'csd_on_front_{plane}_96_steps'] else 'is not'} "
                     f"({', '.join(c[f'front_{plane}_96_steps'])})")
        lines.append(line + ".")
    lines.append(f"- Highest ROUGE-L at {epochs}: {c['highest_rougeL_protocol']}; 'CSD has the highest ROUGE-L' "
                 f"{'holds' if c['csd_highest_rougeL_protocol'] else 'does not hold'} here.")
    return lines


def probe_section(results: dict) -> list[str]:
    """The probes: rows still rising at their last epoch, one run at the next rate up ([] when there are none)."""
    if not results.get("probes"):
        return []
    lines = ["## Probes: a row whose runs all peak at their last epoch, one run at the next rate up its search tried",
             "", "| objective | seed | lr | best validation ROUGE-L (epoch) | test ROUGE-L at best | verdict |",
             "|---|---|---|---|---|---|"]
    for p in results["probes"]:
        lines.append(f"| {p['row']} | {p['seed']} | {p['chosen_lr']:g} (chosen) | {p['chosen_best_validation']:.2f} "
                     f"({p['chosen_best_epoch']:g}) | {p['chosen_test_rougeL']:.2f} | |")
        if not p["finished"]:
            lines.append(f"| {p['row']} | {p['seed']} | {p['lr']:g} | not finished | | |")
            continue
        verdict = (f"higher: {p['chosen_lr']:g} may hold {p['row']} back at this budget (the protocol's runs at "
                   f"{p['lr']:g} are not run; the choice stands as the rule made it)" if p["higher_validation"] else
                   f"not higher: {p['chosen_lr']:g} stands")
        verdict += (f"; by test ROUGE-L {p['row']} ranks {p['rank_chosen']} of {p['of']} at {p['chosen_lr']:g}, and "
                    f"would rank {p['rank_with_probe']} with this one seed's score as its mean")
        lines.append(f"| {p['row']} | {p['seed']} | {p['lr']:g} | {p['best_validation']:.2f} ({p['best_epoch']:g}) | "
                     f"{p['test_rougeL']:.2f} | {verdict} |")
    return [*lines, ""]


def other_rate_section(results: dict) -> list[str]:
    """The runs at rates the budget check did not choose: kept, not in the tables ([] when there are none)."""
    others = results.get("other_rate_runs") or []
    if not others:
        return []
    lines = ["## Runs at rates the 20-epoch check compared, other than its choice (not in the tables above)", "",
             "| objective | seed | lr | best validation ROUGE-L (epoch) | test ROUGE-L at best | at the last step |",
             "|---|---|---|---|---|---|"]
    for r in sorted(others, key=lambda r: (r["row"], r["lr"], r["seed"])):
        lines.append(f"| {r['row']} | {r['seed']} | {r['lr']:g} | {best_validation(r):.2f} ({r['best_epoch']:g}) | "
                     f"{r['test']['best']['rougeL']:.2f} | {r['test']['last']['rougeL']:.2f} |")
    return [*lines, ""]


def core_hours(results: dict) -> str:
    """"; the runs alone: N core-hours (...)" ("" for a report written before run_core_s was kept)."""
    if "run_core_s" not in results:
        return ""
    without = results.get("runs_without_threads", 0)
    return (f"; the runs alone: {results['run_core_s'] / 3600:.2f} core-hours (each one's time x its torch threads"
            + (f"; {without} run(s) without a thread count left out" if without else "") + ")")


def markdown(results: dict) -> str:
    s, runs, missing = results["settings"], results["runs"], results["missing"]
    total = len(runs) + len(missing)
    search = s["lr_search"]
    done = (f"All {total} runs finished." if not missing else
            f"**{len(runs)} of {total} runs finished**; missing: " +
            ", ".join(f"{m['row']} seed {m['seed']} ({m['why']})" for m in missing) + ".")
    budget = f" (capped at {s['max_steps']} steps)" if s.get("max_steps") else ""
    d = s["test_decoding"]
    return "\n".join([
        f"# The paper's training protocol on CPU: {s['epochs']} epochs, best checkpoint by validation ROUGE-L", "",
        f"SmolLM2-135M-Instruct teacher -> its 8-layer cut (experiment=quickstart, precision {s['precision']}); "
        f"{s['epochs']} epochs"
        f"{budget} at batch {s['batch_size']}; after every epoch ROUGE-L of responses generated for "
        f"{s['validation']['prompts']} validation prompts ({s['validation']['decoding']}), best/ kept at the best; the "
        f"test prompts scored at best/ and at the last step (one response per prompt, temperature {d['temperature']}, "
        f"no_repeat_ngram_size {d['no_repeat_ngram_size']}, max {d['max_new_tokens']} new tokens, seed = the run's); "
        f"seeds {s['seeds']}. Mean ± sample std over seeds; distinct-2 in %, self-BLEU x100 (lower = more diverse), NLL "
        f"of the teacher's references in nats/token.", "",
        f"Command: `{s['command']}`  \nMachine: {s['machine']}; torch threads per run: {threads_line(results['runs'])}. "
        f"Compute: {results['compute_s'] / 3600:.2f} h of runs and lr search (each run's wall time, summed: runs "
        f"that ran side by side count in full; a resumed run counts its epochs and test scoring over all its "
        f"processes" + (f"; with the {len(results['other_rate_runs'])} run(s) at rates the check compared, other than its choice"
                        if results.get("other_rate_runs") else "") + (
            f"; with the {len(results['probe_runs'])} probe run(s)" if results.get("probe_runs") else "")
        + ")" + core_hours(results) + ".", "", done, "",
        f"## Learning rates: short-budget search ({search['steps']} steps, seed {search['seed']}, validation ROUGE-L "
        f"over {', '.join(f'{lr:g}' for lr in search['grid'])}, at most {search['edge_extensions']} steps past an edge)",
        "", *selection_lines(results["lr_selection"]), "",
        "## Validation ROUGE-L after each epoch: mean over seeds [lowest, highest]", "", *curve_lines(results), "",
        f"## Test at the best checkpoint, beside the 96-step table ({s.get('table_96') or 'none with these settings'})",
        "", *table_lines(results), "",
        "## The claims, checked by scripts/cpu_protocol_report.py on the means at the best checkpoint", "",
        *claim_lines(results), "", *probe_section(results), *other_rate_section(results),
        "![protocol](cpu_protocol.png)", ""])


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curve_axes, plane) = plt.subplots(1, 2, figsize=(14, 5))
    colors = dict(zip(results["validation_curves"], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for row, c in results["validation_curves"].items():
        curve_axes.plot(c["epoch"], c["mean"], marker=".", color=colors[row], label=row)
        curve_axes.fill_between(c["epoch"], c["low"], c["high"], color=colors[row], alpha=0.2)
        peak = results["peak_epoch"][row]["mean_curve"]
        curve_axes.plot([peak], [c["mean"][c["epoch"].index(peak)]], "o", color=colors[row], markeredgecolor="black")
    curve_axes.set(xlabel="epoch", ylabel="validation ROUGE-L (generated)",
                   title="Validation ROUGE-L per epoch (mean, band: lowest-highest seed; o: peak)")
    curve_axes.legend(fontsize=8)
    best, table_96 = results["test_best"], results["table_96"]
    front = set(results["claims"].get("front_distinct_2_protocol", []))
    for row, stats in best.items():
        x, y = 100 * stats["distinct_2"]["mean"], stats["rougeL"]["mean"]
        plane.errorbar(x, y, xerr=100 * stats["distinct_2"]["std"], yerr=stats["rougeL"]["std"], fmt="o",
                       color=colors.get(row), capsize=2, markeredgecolor="black" if row in front else colors.get(row))
        plane.annotate(row, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
        if row in table_96:
            x0, y0 = 100 * table_96[row]["distinct_2"]["mean"], table_96[row]["rougeL"]["mean"]
            plane.plot([x0], [y0], "o", markerfacecolor="none", color=colors.get(row))
            plane.annotate("", (x, y), (x0, y0), arrowprops={"arrowstyle": "->", "color": colors.get(row), "alpha": 0.6})
    if front:
        line = sorted((100 * best[r]["distinct_2"]["mean"], best[r]["rougeL"]["mean"]) for r in front)
        plane.plot(*zip(*line), "k--", linewidth=0.8, label=f"front at {results['settings']['epochs']} epochs (means)")
        plane.legend(fontsize=8)
    plane.set(xlabel="distinct-2 (%), test", ylabel="ROUGE-L, test",
              title=f"Test at the best checkpoint of {results['settings']['epochs']} epochs (filled), at 96 steps (hollow)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: dict, out: Path) -> None:
    (out / "cpu_protocol.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "cpu_protocol.md").write_text(markdown(results), encoding="utf-8")
    if results["runs"]:
        figure(results, out / "cpu_protocol.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The .md and .png of scripts/cpu_protocol.py again from its JSON.")
    parser.add_argument("--json", type=Path, default=Path("docs/results/cpu_protocol.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    if not args.json.exists():
        parser.error(f"--json {args.json} does not exist (scripts/cpu_protocol.py writes it)")
    results = json.loads(args.json.read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_protocol.md").write_text(markdown(results), encoding="utf-8")
    if results["runs"]:
        figure(results, args.out / "cpu_protocol.png")
    print(f"wrote {args.out / 'cpu_protocol.md'}")
