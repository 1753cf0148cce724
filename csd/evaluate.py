"""Score a checkpoint as the paper does: `python -m csd.evaluate model.name_or_path=PATH eval_sets=[...]`.

For every eval set (configs/data/<name>.yaml):
  sampled sets (instruction following): one generation per seed in `seeds` (10..50), metric
      per seed, then mean ± std over seeds (sample std, ddof=1);
  greedy sets (GSM8K, DialogSum, translation): one generation (the first seed);
  MT-Bench / AlpacaEval: answer files in FastChat / AlpacaEval format, no score (paid judge).
Writes <output_dir>/<set>/seed<k>/answers.jsonl and <output_dir>/metrics.json; with W&B (`logger`, see
csd/logger.py: log_evaluation) also the scores and sample answers into the training run's W&B run.
"""
from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from csd.data import load_data_config, load_examples
from csd.data.benchmarks import answer_mt_bench, write_alpaca_eval_outputs, write_mt_bench_answers
from csd.generation import generate, generate_vllm
from csd.inputs import check_evaluation_inputs, check_overrides, one_line_errors
from csd.metrics import comet, compute_metric

log = logging.getLogger(__name__)
DEFAULTS = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 256,
            "max_prompt_length": 256, "stop_strings": None, "no_repeat_ngram_size": 0}


def load_model_and_tokenizer(model_cfg, device: str = "auto"):
    """The model node (csd/models.py keys: name_or_path, gguf_file, tokenizer, dtype, peft_path) on `device`, eval mode."""
    import torch

    from csd.models import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(model_cfg), load_model(model_cfg)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), tokenizer


def generation_settings(overrides: dict, data_cfg: dict) -> dict:
    """Evaluate-config value if set, else the eval set's value, else the MiniLLM default."""
    settings = {}
    for key, default in DEFAULTS.items():
        value = overrides.get(key)
        settings[key] = value if value is not None else data_cfg.get(key, default)
    if settings["stop_strings"] is not None:
        settings["stop_strings"] = list(settings["stop_strings"])
    return settings


def primary_metric(data_cfg: dict) -> str:
    """The headline key of an eval set's scores: its config's `primary_metric`, else the metric's own name."""
    return data_cfg.get("primary_metric") or {"rouge": "rougeL"}.get(data_cfg["metric"], data_cfg["metric"])


def mean_and_std(per_seed: dict[str, dict[str, float]]) -> tuple[dict, dict]:
    keys = next(iter(per_seed.values())).keys()
    means = {k: statistics.fmean(r[k] for r in per_seed.values()) for k in keys}
    stds = {k: statistics.stdev([r[k] for r in per_seed.values()]) if len(per_seed) > 1 else 0.0 for k in keys}
    return means, stds


def write_answers(path: Path, examples: list[dict], predictions: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for index, (example, text) in enumerate(zip(examples, predictions)):
            f.write(json.dumps({"index": index, "prompt": example["prompt"], "text": text,
                                "references": example.get("references", [])}, ensure_ascii=False) + "\n")


class Generator:
    """prompts + decoding settings + seed -> responses, from an HF model (or vLLM for ``csd.evaluate backend=vllm``)."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8, precision: str | None = None, progress: bool = False,
                 synced_gpus: bool = False, llm=None, model_path: str | None = None):
        self.model, self.tokenizer, self.llm, self.model_path = model, tokenizer, llm, model_path
        self.batch_size, self.precision, self.progress, self.synced_gpus = batch_size, precision, progress, synced_gpus

    @classmethod
    def from_config(cls, cfg: DictConfig, model, tokenizer) -> "Generator":
        if cfg.backend == "vllm":
            if cfg.model.get("peft_path"):
                raise ValueError("backend=vllm needs a merged checkpoint; merge the LoRA adapter first")
            from vllm import LLM

            llm = LLM(model=cfg.model.name_or_path, dtype=str(cfg.model.get("dtype", "auto")))
            return cls(None, tokenizer, llm=llm, model_path=cfg.model.name_or_path)
        if cfg.backend != "hf":
            raise ValueError(f"unknown backend {cfg.backend!r} (hf | vllm)")
        return cls(model, tokenizer, batch_size=cfg.generation.batch_size, precision=cfg.generation.get("precision"),
                   progress=cfg.progress)

    def __call__(self, prompts, settings: dict, seed: int | None, desc: str) -> list[str]:
        common = dict(max_new_tokens=settings["max_new_tokens"], do_sample=settings["do_sample"],
                      temperature=settings["temperature"], top_k=settings["top_k"], top_p=settings["top_p"],
                      no_repeat_ngram_size=settings["no_repeat_ngram_size"], seed=seed,
                      stop_strings=settings["stop_strings"], max_prompt_length=settings["max_prompt_length"])
        if self.llm is not None:
            return generate_vllm(self.model_path, self.tokenizer, prompts, llm=self.llm, **common)
        return generate(self.model, self.tokenizer, prompts, batch_size=self.batch_size, progress=self.progress,
                        desc=desc, precision=self.precision, synced_gpus=self.synced_gpus, **common)


def score(generator: Generator, examples: list[dict], data_cfg: dict, seeds, decoding: dict | None = None, *,
          answers_dir: Path | None = None, extra_metrics=None, name: str = "") -> dict:
    """Generate responses to ``examples`` once per seed (greedy sets: the first seed only) and score them with the
    eval set's metric; the one scorer of the project (csd.evaluate, the trainer's validation, the CPU tables).

    ``decoding`` overrides the eval set's decoding (``generation_settings``); ``extra_metrics(predictions)`` adds
    scores (e.g. distinct-n); ``answers_dir`` gets ``seed<k>/answers.jsonl``. Returns the result layout of
    metrics.json plus ``predictions`` {seed: [response, ...]} (not written there)."""
    settings = generation_settings(dict(decoding or {}), data_cfg)
    seeds = list(seeds) if settings["do_sample"] else list(seeds)[:1]
    per_seed, predictions_by_seed = {}, {}
    for seed in seeds or [None]:
        predictions = generator([ex["prompt"] for ex in examples], settings, seed, f"{name} seed {seed}")
        if answers_dir is not None:
            write_answers(Path(answers_dir) / f"seed{seed}" / "answers.jsonl", examples, predictions)
        scores = compute_metric(data_cfg["metric"], predictions, examples)
        if data_cfg.get("comet"):
            scores.update(comet([ex.get("source", "") for ex in examples], predictions,
                                [ex["references"][0] for ex in examples]))
        if extra_metrics is not None:
            scores.update(extra_metrics(predictions))
        per_seed[str(seed)], predictions_by_seed[str(seed)] = scores, predictions
        log.info("%s seed %s: %s", name, seed, scores)
    means, stds = mean_and_std(per_seed)
    return {"metric": data_cfg["metric"], "primary": primary_metric(data_cfg),
            "secondary": list(data_cfg.get("secondary_metrics") or []), "n_examples": len(examples), "seeds": seeds,
            "settings": settings, "mean": means, "std": stds, "per_seed": per_seed, "predictions": predictions_by_seed}


def evaluate_set(cfg: DictConfig, config_name: str, generator: Generator, tokenizer, output_dir: Path) -> dict:
    """Results of one eval set; `config_name` is a configs/data name or a yaml path."""
    data_cfg = OmegaConf.to_container(load_data_config(config_name), resolve=True)
    name = data_cfg["name"]
    examples = load_examples(data_cfg, cfg.split, tokenizer, max_examples=cfg.max_examples)
    decoding = OmegaConf.to_container(cfg.generation, resolve=True)
    settings = generation_settings(decoding, data_cfg)
    model_id = cfg.model.get("model_id") or Path(str(cfg.model.name_or_path).rstrip("/")).name
    log.info("%s: %d examples, %s", name, len(examples), settings)

    if data_cfg["format"] == "mt_bench":
        seed = cfg.seeds[0] if cfg.seeds else None

        def generate_turn(prompts, do_sample, temperature):
            return generator(prompts, dict(settings, do_sample=do_sample, temperature=temperature), seed,
                             f"{name} turn")
        answers = answer_mt_bench(examples, tokenizer, generate_turn)
        path = write_mt_bench_answers(output_dir / name / "model_answer" / f"{model_id}.jsonl", model_id,
                                      examples, answers)
        return {"format": "fastchat_model_answer", "answer_file": str(path), "n_examples": len(examples),
                "settings": settings}
    if data_cfg["format"] == "alpaca_eval":
        outputs = generator([ex["prompt"] for ex in examples], settings, cfg.seeds[0] if cfg.seeds else None, name)
        path = write_alpaca_eval_outputs(output_dir / name / f"{model_id}.json", model_id, examples, outputs)
        return {"format": "alpaca_eval_json", "answer_file": str(path), "n_examples": len(examples),
                "settings": settings}
    result = score(generator, examples, data_cfg, cfg.seeds, decoding, answers_dir=output_dir / name, name=name)
    result.pop("predictions")
    return result


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    from csd.logger import log_evaluation

    logger = OmegaConf.select(cfg, "logger.name", default="none")
    if logger not in ("auto", "wandb", "none"):
        raise ValueError(f"logger={logger!r} is not allowed; choose one of: auto, wandb, none")
    check_evaluation_inputs(cfg)  # eval sets and model paths, before any model loads
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model, tokenizer = load_model_and_tokenizer(model_cfg, cfg.device) if cfg.backend == "hf" else (None, None)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_cfg.get("tokenizer") or model_cfg["name_or_path"])
    generator = Generator.from_config(cfg, model, tokenizer)
    results = {}
    for config_name in cfg.eval_sets:
        name = str(load_data_config(config_name).name)
        if name in results:
            raise ValueError(f"two eval sets are named {name!r}")
        results[name] = evaluate_set(cfg, config_name, generator, tokenizer, output_dir)
    report = {"model": model_cfg, "backend": cfg.backend, "split": cfg.split, "results": results}
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    for name, result in results.items():
        if "mean" in result:
            main_key = result["primary"]
            print(f"{name:12s} {main_key:10s} {result['mean'][main_key]:7.2f} ± {result['std'][main_key]:.2f}"
                  f"  (n={result['n_examples']}, seeds={result['seeds']})")
        else:
            print(f"{name:12s} answers -> {result['answer_file']}")
    print(f"metrics: {output_dir / 'metrics.json'}")
    if logger != "none":
        log_evaluation(cfg, report, output_dir)
    return report


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with one_line_errors("csd.evaluate"):  # bad config or input: one line, no traceback
        run_evaluation(cfg)


if __name__ == "__main__":
    check_overrides("csd.evaluate", "evaluate")  # a bad override in one line (Hydra's report takes several)
    main()
