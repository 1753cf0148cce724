"""Presets pinned to the authors' release (issue 13): the Table 3 teachers' SFT, Table 3 checkpoint selection, the
Table 2 student initialisations, the fp16 teachers. Values from ../shared/reference/official-release.md and the
release's config/sft/*.yaml, DistiLLM's scripts/*/init/*.sh."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from csd.config import CONFIG_DIR, compose, validate
from csd.data import load_examples
from csd.data.sources import load_raw_records
from csd.testing import make_tiny_tokenizer

from csd.tables import Run, checkpoint_of, eval_overrides

REPO = Path(__file__).resolve().parents[1]

TEACHERS = {  # task: (its Table 3 preset, train file, validation file, epochs)
    "gsm8k": ("table3_gsm8k", "gsm_7k_train.json", "gsm_7k_vali.json", 3),
    "dialogsum": ("table3_summ", "train.jsonl", "validation.jsonl", 3),
    "translation": ("table3_mt", "mt_1k_train.json", "mt_1k_vali.json", 10),
}


# ------------------------------------------------------------------ item 5: the Table 3 teachers
@pytest.mark.parametrize("task", sorted(TEACHERS))
def test_teacher_sft_preset_is_the_releases(task):
    table3, train_file, validation_file, epochs = TEACHERS[task]
    cfg = compose([f"experiment=sft_gemma_7b_{task}"])
    validate(cfg)
    assert (cfg.loss.name, cfg.loss.reduction, cfg.train.kd_ratio) == ("sft", "token", 0.0)
    assert (cfg.model.student.name_or_path, cfg.model.student.dtype) == ("google/gemma-7b-it", "bfloat16")
    splits = OmegaConf.to_container(cfg.data.splits, resolve=True)
    assert (splits["train"], splits["validation"]) == (train_file, validation_file)
    assert (cfg.optim.lr, cfg.optim.scheduler, cfg.optim.warmup_ratio, cfg.optim.min_lr) == (1e-5, "cosine", 0.1, 0.0)
    assert (cfg.optim.weight_decay, cfg.optim.clip_grad) == (0.0, 1.0)      # HF Trainer defaults
    assert (cfg.train.epochs, cfg.train.seed, cfg.train.batch_size, cfg.train.grad_accum) == (epochs, 42, 8, 8)
    # effective batch 128 = 8 per device x 8 accumulation x the 2 processes the preset's launch line starts
    text = (CONFIG_DIR / "experiment" / f"sft_gemma_7b_{task}.yaml").read_text()
    assert "--num_processes 2" in text and cfg.train.batch_size * cfg.train.grad_accum * 2 == 128
    # Table 3 distils from the teacher's last checkpoint
    assert compose([f"experiment={table3}"]).model.teacher.name_or_path == f"{cfg.output_dir}/final"


def test_the_1k_distillation_sets_stay_1k():
    for task, (table3, *_rest) in TEACHERS.items():
        splits = compose([f"experiment={table3}"]).data.splits
        assert splits.train.endswith("_1k_train.json") and splits.validation.endswith("_1k_vali.json"), task


def fake_hub(monkeypatch, rows):
    import datasets

    calls = []

    def load_dataset(hub_id, config=None, split=None):
        calls.append((hub_id, config, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    return calls


def test_teacher_sets_fall_back_to_the_full_hub_splits(monkeypatch, tmp_path):
    calls = fake_hub(monkeypatch, [{"question": "1 + 1?", "answer": "2 #### 2"}])
    gsm = OmegaConf.to_container(compose(["experiment=sft_gemma_7b_gsm8k", f"data.path={tmp_path}"]).data, resolve=True)
    assert len(load_raw_records(gsm, "train")) == 1 and calls == [("openai/gsm8k", "main", "train")]
    summ = OmegaConf.to_container(compose(["experiment=sft_gemma_7b_dialogsum", f"data.path={tmp_path}"]).data,
                                  resolve=True)
    load_raw_records(summ, "train")
    load_raw_records(summ, "validation")
    assert calls[1:] == [("knkarthick/dialogsum", None, "train"), ("knkarthick/dialogsum", None, "validation")]
    # the distillation's 1k subset never falls back to the full set
    distil = OmegaConf.to_container(compose(["experiment=table3_gsm8k", f"data.path={tmp_path}"]).data, resolve=True)
    with pytest.raises(FileNotFoundError, match="gsm_1k_train.json"):
        load_raw_records(distil, "train")


def test_prepare_data_writes_the_hub_train_split_under_the_authors_json_name(monkeypatch, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts" / "prepare_data.py")
    prepare_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare_data)
    fake_hub(monkeypatch, [{"question": "Tom has 3 apples and eats one. How many are left?", "answer": "3 - 1 = 2 #### 2"}])
    cfg = dict(OmegaConf.to_container(compose(["data=gsm8k"]).data, resolve=True), path=str(tmp_path))
    prepare_data.download_hub_split(cfg, "teacher_train", "train")
    assert json.loads((tmp_path / "gsm_7k_train.json").read_text()) == {"instances": [
        {"question": "Tom has 3 apples and eats one. How many are left?", "answer": "3 - 1 = 2 #### 2"}]}
    example = load_examples(cfg, "teacher_train", make_tiny_tokenizer())[0]
    assert "Q: Tom has 3 apples" in example["prompt"] and example["answer"] == "2"
    (tmp_path / "gsm_7k_train.json").write_text(json.dumps({"instances": []}))  # the authors' file: kept
    prepare_data.download_hub_split(cfg, "teacher_train", "train")
    assert json.loads((tmp_path / "gsm_7k_train.json").read_text()) == {"instances": []}
    assert "not replaced" in capsys.readouterr().out


# ------------------------------------------------------------------ item 7: Table 3 checkpoint selection
@pytest.mark.parametrize("preset", ["table3_gsm8k", "table3_summ", "table3_mt"])
def test_table3_keeps_the_best_validation_loss_every_25_steps(preset):
    cfg = compose([f"experiment={preset}"])
    validate(cfg)
    assert (cfg.train.eval_every, cfg.train.best_metric, cfg.train.eval_generate) == (25, "val/loss", 0)


def test_evaluation_reads_best_when_the_run_kept_one(tmp_path):
    (tmp_path / "final").mkdir()
    assert checkpoint_of(tmp_path) == tmp_path / "final"
    (tmp_path / "best").mkdir()
    assert checkpoint_of(tmp_path) == tmp_path / "best"
    student = compose(["experiment=table3_gsm8k"]).model.student
    assert f"model.name_or_path={tmp_path / 'best'}" in eval_overrides(Run("gsm8k", ["gsm8k"], []), tmp_path,
                                                                     ["gsm8k"], student)


# ------------------------------------------------------------------ item 10: Table 2 student initialisations
@pytest.mark.parametrize("init, table2, key, seed", [
    ("sft_gpt2_init", "table2_gpt2", "name_or_path", 10),
    ("sft_gpt2_medium_init", "table2_gpt2_medium", "name_or_path", 10),
    ("sft_openllama2_3b_lora", "table2_openllama2", "lora_path", 20),
])
def test_student_initialisations_train_3_epochs_and_keep_the_best_validation_loss(init, table2, key, seed):
    cfg = compose([f"experiment={init}"])
    validate(cfg)
    assert (cfg.loss.name, cfg.train.epochs, cfg.train.best_metric, cfg.train.eval_generate) == ("sft", 3, "val/loss", 0)
    assert (cfg.optim.lr, cfg.train.batch_size, cfg.train.seed) == (5e-4, 8, seed)   # DistiLLM's init scripts
    assert compose([f"experiment={table2}"]).model.student[key] == f"{cfg.output_dir}/best"


# ------------------------------------------------------------------ item 12: fp16 teachers (--teacher-model-fp16)
@pytest.mark.parametrize("pair", ["gpt2_xl_to_gpt2", "gpt2_xl_to_gpt2_medium", "openllama2_7b_to_3b"])
def test_task_agnostic_teachers_load_in_fp16(pair):
    assert compose([f"model={pair}"]).model.teacher.dtype == "float16"
