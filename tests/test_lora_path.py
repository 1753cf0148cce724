"""model.student.lora_path: a saved LoRA adapter is loaded trainable and trained further (the release's Table 2
OpenLLaMA student keeps training its SFT adapter), not merged and replaced by a new one."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from csd.models import build_models
from csd.train import run

LORA = "model.student.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}"


def adapter_weights(directory: Path) -> dict:
    return load_file(str(directory / "adapter_model.safetensors"))


def test_saved_adapter_is_loaded_trainable_and_trained_further(train_config, tmp_path):
    run(train_config("loss=csd", LORA, "optim.lr=1e-2", "train.save_final_model=true", f"output_root={tmp_path}/sft"))
    sft = tmp_path / "sft" / "default" / "run" / "final"
    saved = adapter_weights(sft)
    assert any(float(t.abs().max()) > 0 for name, t in saved.items() if "lora_B" in name)  # B moved from zero

    cfg = train_config("loss=csd", f"model.student.lora_path={sft}", "optim.lr=1e-2", "train.save_final_model=true",
                       f"output_root={tmp_path}/kd")
    student = build_models(cfg).student
    trainable = {n: p for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)  # the adapter trains, the base stays frozen
    loaded = {n.replace(".default", ""): p.detach() for n, p in trainable.items()}
    for name, tensor in saved.items():  # the SFT adapter's values, not a fresh initialisation
        torch.testing.assert_close(loaded[name], tensor)

    run(cfg)
    trained = adapter_weights(tmp_path / "kd" / "default" / "run" / "final")
    assert trained.keys() == saved.keys()
    assert any(not torch.allclose(trained[n], saved[n]) for n in saved)


def test_lora_and_lora_path_together_are_refused(train_config, tmp_path):
    with pytest.raises(ValueError, match="lora_path"):
        build_models(train_config(LORA, f"model.student.lora_path={tmp_path}"))


def test_float16_teacher_runs_in_float16_under_bf16_autocast(train_config):
    """--teacher-model-fp16: the teacher's logits are float16 even when the student trains under bf16 autocast."""
    cfg = train_config("loss=csd", "model.teacher.dtype=float16", "train.mixed_precision=bf16", "train.max_steps=1")
    models = build_models(cfg)
    seen = []
    models.teacher.lm_head.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    student_seen = []
    models.student.lm_head.register_forward_hook(lambda module, args, output: student_seen.append(output.dtype))
    run(cfg, models)
    assert seen and set(seen) == {torch.float16}
    assert set(student_seen) == {torch.bfloat16}  # the student's autocast is untouched


def test_float32_teacher_runs_under_the_students_bf16_autocast(train_config):
    """Only a float16 teacher leaves autocast: a float32 teacher's logits are bfloat16 like the student's."""
    cfg = train_config("loss=csd", "model.teacher.dtype=float32", "train.mixed_precision=bf16", "train.max_steps=1")
    models = build_models(cfg)
    seen = []
    models.teacher.lm_head.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    run(cfg, models)
    assert seen and set(seen) == {torch.bfloat16}


def test_add_bos_token_false_drops_the_bos_everywhere_the_tokenizer_goes(tmp_path):
    """OpenLLaMA as the release encodes it (no BOS): training, sampling and the saved tokenizer of best/ and final/
    (which csd.evaluate loads) all follow the model node's add_bos_token."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from csd.models import load_tokenizer
    from csd.testing import save_tiny_checkpoint

    checkpoint = save_tiny_checkpoint(tmp_path / "llama_bos", arch="llama", layers=1, hidden=16, add_bos=True)
    shipped = load_tokenizer(OmegaConf.create({"name_or_path": str(checkpoint)}))
    assert shipped("hello").input_ids[0] == shipped.bos_token_id
    without = load_tokenizer(OmegaConf.create({"name_or_path": str(checkpoint), "add_bos_token": False}))
    assert without("hello").input_ids == shipped("hello").input_ids[1:]
    without.save_pretrained(str(tmp_path / "saved"))
    assert AutoTokenizer.from_pretrained(str(tmp_path / "saved"))("hello").input_ids == without("hello").input_ids
