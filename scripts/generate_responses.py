"""Pre-generate teacher and student responses to chat prompts -> a pairs dataset (Table 4).

    python scripts/generate_responses.py teacher.name_or_path=Qwen/Qwen2.5-7B-Instruct \
        student.name_or_path=Qwen/Qwen2.5-1.5B-Instruct [data=ultrachat] [max_examples=N] [backend=vllm]

As the authors' generate/generate_vllm.py: prompts of UCLA-AGI/SPIN_iter1 (configs/data/ultrachat.yaml),
chat template with one user turn, temperature 0.8, top-p 0.95, up to 1024 new tokens, seed 42,
one response per prompt from each model. Writes to `output_dir` (default data/chat_pairs):
  teacher.jsonl / student.jsonl   {prompt, generated_text}   (one model loaded at a time; an
                                  existing file is reused, so the two sides can run separately)
  train.jsonl                     {prompt, teacher_response, student_response}
  test.jsonl                      the first `test_size` (500) pairs, as DistiLLM-2's reformat.py
Arguments are OmegaConf dotlist overrides of DEFAULTS below.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omegaconf import OmegaConf  # noqa: E402

from csd.data import load_data_config, load_examples, resolve_path  # noqa: E402
from csd.evaluate import load_model_and_tokenizer  # noqa: E402
from csd.generation import generate, generate_vllm  # noqa: E402
from csd.inputs import check_data_files, check_model_paths, one_line_errors  # noqa: E402

DEFAULTS = {
    "data": "ultrachat", "split": "train", "max_examples": None,
    "teacher": {"name_or_path": None, "tokenizer": None, "dtype": "auto", "peft_path": None, "gguf_file": None},
    "student": {"name_or_path": None, "tokenizer": None, "dtype": "auto", "peft_path": None, "gguf_file": None},
    "only": None,                 # teacher | student: generate one side only (no pairs written)
    "seed": 42, "temperature": None, "top_p": None, "max_new_tokens": None,   # null = data config value
    "batch_size": 8, "backend": "hf", "device": "auto", "progress": True,
    "output_dir": "data/chat_pairs", "test_size": 500,
}


def read_side(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def generate_side(cfg, side: str, data_cfg, output_dir: Path) -> list[dict]:
    path = output_dir / f"{side}.jsonl"
    if path.exists():
        print(f"{side}: reusing {path}")
        return read_side(path)
    model_cfg = OmegaConf.to_container(cfg[side], resolve=True)
    settings = dict(max_new_tokens=cfg.max_new_tokens or data_cfg.get("max_new_tokens", 1024), do_sample=True,
                    temperature=cfg.temperature or data_cfg.get("temperature", 0.8),
                    top_p=cfg.top_p or data_cfg.get("top_p", 0.95), top_k=0, seed=cfg.seed,
                    max_prompt_length=data_cfg.get("max_prompt_length"))
    if cfg.backend == "vllm":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_cfg.get("tokenizer") or model_cfg["name_or_path"])
        examples = load_examples(data_cfg, cfg.split, tokenizer, max_examples=cfg.max_examples)
        texts = generate_vllm(model_cfg["name_or_path"], tokenizer, [ex["prompt"] for ex in examples], **settings)
    else:
        model, tokenizer = load_model_and_tokenizer(model_cfg, cfg.device)
        examples = load_examples(data_cfg, cfg.split, tokenizer, max_examples=cfg.max_examples)
        texts = generate(model, tokenizer, [ex["prompt"] for ex in examples], batch_size=cfg.batch_size,
                         progress=cfg.progress, desc=side, **settings)
        del model
    rows = [{"prompt": ex["instruction"], "generated_text": text} for ex, text in zip(examples, texts)]
    output_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{side}: {len(rows)} responses -> {path}")
    return rows


def write_pairs(teacher: list[dict], student: list[dict], output_dir: Path, test_size: int) -> None:
    student_by_prompt = {row["prompt"]: row["generated_text"] for row in student}
    pairs = [{"prompt": row["prompt"], "teacher_response": row["generated_text"],
              "student_response": student_by_prompt[row["prompt"]]}
             for row in teacher if row["prompt"] in student_by_prompt]
    for name, rows in (("train", pairs), ("test", pairs[:test_size])):
        (output_dir / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"pairs: {len(pairs)} -> {output_dir / 'train.jsonl'} (test: first {min(test_size, len(pairs))})")


def main(argv: list[str]) -> None:
    if {"-h", "--help"} & set(argv):
        print(__doc__.strip() + "\n\nDefaults:\n" + OmegaConf.to_yaml(OmegaConf.create(DEFAULTS)).rstrip())
        return
    defaults = OmegaConf.create(DEFAULTS)
    OmegaConf.set_struct(defaults, True)  # an unknown key is an error, not a silently ignored setting
    cfg = OmegaConf.merge(defaults, OmegaConf.from_dotlist(argv))
    if cfg.only not in (None, "teacher", "student"):
        raise ValueError(f"only={cfg.only!r} is not allowed; choose one of: teacher, student (or leave it unset)")
    data_cfg = OmegaConf.to_container(load_data_config(cfg.data), resolve=True)
    output_dir = resolve_path(cfg.output_dir)
    sides = [cfg.only] if cfg.only else ["teacher", "student"]
    check_data_files(data_cfg, [cfg.split], f"data={cfg.data}")  # before any model loads
    for side in sides:
        if not (output_dir / f"{side}.jsonl").exists():  # else reused, the model not needed
            if not cfg[side].name_or_path:
                raise ValueError(f"set {side}.name_or_path=... (or only=teacher|student)")
            check_model_paths(cfg[side], side)
    rows = {side: generate_side(cfg, side, data_cfg, output_dir) for side in sides}
    if not cfg.only:
        write_pairs(rows["teacher"], rows["student"], output_dir, cfg.test_size)


if __name__ == "__main__":
    with one_line_errors("generate_responses.py"):  # a bad key, model path or data file: one line, no traceback
        main(sys.argv[1:])
