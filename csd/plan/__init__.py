"""Will a run fit, and how long will it take? Per-GPU memory and compute of one training run, without weights.

    python -m csd.plan experiment=table3_gsm8k [--launch configs/accelerate/zero3_bf16_4gpu.yaml] [--gpus N]
                       [--gpu-memory 80GB] [--json] [hydra overrides]
    python -m csd.tables table3 --plan [--gpus N] [--gpu-memory 80GB] [--json]        # every row of a table

Both models are built on PyTorch's meta device (shapes, no weights; csd/architectures.py, or the config.json of a
local checkpoint), with the run's keep_layers / LoRA applied, so parameter and trainable counts are exact. Per GPU:

  model states   DeepSpeed's own estimators (estimate_zero2/zero3_model_states_mem_needs) for the trainable
                 parameters under the launch file's ZeRO stage and offload, plus the frozen 16-bit weights; without
                 DeepSpeed: weights, gradients and AdamW's two moments in the student's dtype (torch.optim.AdamW)
  activations    measured: the student's forward runs on the meta device at the micro-batch's shape and every tensor
                 autograd saves for backward is counted (csd/plan/probe.py), with and without gradient
                 checkpointing; plus what the step itself keeps (csd/step.py, csd/losses): the (N, V) logits of
                 student and teacher at the N target positions (bounded by rows x length unless the batch's
                 targets are known), the loss's gradient buffer, the float32 chunks
  teacher        its weights (or, reading a teacher cache, its head only) and, for a cache, the disk it takes
  compute        FLOPs = 2 x (matmul weights + attention) per token forward, x3 for a trained student (x2 with
                 LoRA's frozen base, +1 forward with checkpointing); GPU-hours at a stated MFU of the dense bf16 peak
Every printed number says where it comes from; "estimate" marks the modelled ones.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from csd.config import CONFIG_DIR, distillation_enabled

GiB = 2**30
LAUNCH_DIR = CONFIG_DIR / "accelerate"
# Dense bf16 tensor-core peaks (no sparsity): NVIDIA A100 datasheet (312 TFLOPS), H100 SXM datasheet (989 TFLOPS).
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0}
DEFAULT_MFU = 0.40           # a stated assumption for the GPU-hours, --mfu to change it
HEADROOM = 0.10              # of each GPU kept free for the CUDA context, NCCL buffers and allocator fragmentation
CHUNK_BYTES = 4 * (1 << 22)  # one float32 chunk of the chunked losses (csd/losses/base.py DEFAULT_CHUNK_ELEMENTS)
CHUNK_TEMPORARIES = 8        # float32 (chunk, V) temporaries alive at once in a chunk's value and gradient (estimate)
# Training examples of the paper's splits, for tokens per epoch when the prepared data is not here.
PAPER_SPLITS = {
    "gsm8k": (1000, "the paper (arXiv 2509.25837), Table 3 setup: 1k train subsets"),
    "dialogsum": (1000, "the paper (arXiv 2509.25837), Table 3 setup: 1k train subsets"),
    "translation": (1000, "the paper (arXiv 2509.25837), Table 3 setup: 1k train subsets"),
    "dolly": (14011, "databricks-dolly-15k dataset card, 15,011 records, minus the 1,000 dev examples "
                     "(configs/data/dolly.yaml)"),
    "chat_pairs": (49800, "UltraChat prompts of UCLA-AGI/SPIN_iter0's train split, 49.8k rows (HF dataset viewer)"),
}


@dataclasses.dataclass
class Launch:
    """What a configs/accelerate/ file asks for (None: one plain process)."""
    file: Optional[str]
    processes: int = 1
    zero_stage: Optional[int] = None   # None: no DeepSpeed (one process or DDP)
    offload_optimizer: bool = False
    offload_param: bool = False
    mixed_precision: Optional[str] = None   # the file's; train.mixed_precision, when set, wins (as accelerate does)

    @property
    def kind(self) -> str:
        if self.zero_stage is None:
            return "ddp" if self.processes > 1 else "single"
        return f"zero{self.zero_stage}" + ("_offload" if self.offload_optimizer or self.offload_param else "")


def read_launch(file: Optional[str]) -> Launch:
    if file is None:
        return Launch(None)
    path = Path(file) if Path(file).is_file() else CONFIG_DIR.parent / file
    if not path.is_file():
        raise ValueError(f"no launch file {file}; files: {', '.join(sorted(p.name for p in LAUNCH_DIR.glob('*.yaml')))}")
    node = OmegaConf.load(path)
    processes, precision = int(node.get("num_processes", 1)), node.get("mixed_precision")
    if node.get("distributed_type") != "DEEPSPEED":
        return Launch(file, processes, mixed_precision=precision)
    zero = node.deepspeed_config
    return Launch(file, processes, int(zero.zero_stage), zero.get("offload_optimizer_device", "none") != "none",
                  zero.get("offload_param_device", "none") != "none", precision)


def launch_files() -> list[Launch]:
    return [read_launch(str(p.relative_to(CONFIG_DIR.parent))) for p in sorted(LAUNCH_DIR.glob("*.yaml"))]


def launch_like(kind: str, gpus: int) -> Launch:
    """The launch file of this kind (zero1, zero3, zero3_offload, ddp) for ``gpus`` processes; one GPU without
    DeepSpeed: a plain process."""
    if kind in ("single", "ddp") and gpus == 1:
        return Launch(None)
    for launch in launch_files():
        if launch.kind == ("ddp" if kind == "single" else kind) and launch.processes == gpus:
            return launch
    have = sorted({f"{launch.kind} x{launch.processes}" for launch in launch_files()})
    raise ValueError(f"no configs/accelerate file of kind {kind} for {gpus} GPUs; there are: {', '.join(have)}")


@dataclasses.dataclass
class Batch:
    """One process's micro-batch and the step around it."""
    rows: int          # sequences per micro-batch per process (a chat pair is two)
    length: int        # tokens per sequence (the longest batch: memory)
    grad_accum: int
    processes: int
    targets: Optional[int] = None   # target positions per micro-batch (None: rows x length, the bound)

    @property
    def positions(self) -> int:
        """Positions the logits path computes logits at: the targets (csd.step.logits_at_rows)."""
        return self.rows * self.length if self.targets is None else self.targets

    @property
    def rows_per_step(self) -> int:
        return self.rows * self.grad_accum * self.processes


def keep_global_batch(batch: Batch, processes: int, rows_per_example: int) -> Batch:
    """The same global batch on ``processes`` GPUs: grad_accum absorbs the change, the micro-batch shrinks only when
    the global batch does not divide (then the largest micro-batch that divides it)."""
    total = batch.rows_per_step // rows_per_example
    examples = batch.rows // rows_per_example
    for micro in range(examples, 0, -1):
        if total % (micro * processes) == 0:
            return Batch(micro * rows_per_example, batch.length, total // (micro * processes), processes)
    raise ValueError(f"a global batch of {total} examples does not split over {processes} GPUs")


def bytes_of(dtype_name: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 4}[dtype_name]


def compute_dtype(cfg: DictConfig, launch: Launch) -> str:
    """What the student's matmuls produce: bf16/fp16 under mixed precision, else the student's dtype."""
    precision = cfg.train.mixed_precision or launch.mixed_precision or "no"
    return {"bf16": "bfloat16", "fp16": "float16"}.get(precision, cfg.model.student.dtype)


def deepspeed_logs_to_stderr():
    """DeepSpeed's logger writes to the stdout it finds at import: keep --json's stdout JSON."""
    import contextlib
    import sys

    return contextlib.redirect_stdout(sys.stderr)


def model_states(params: int, trainable: int, largest_layer: int, launch: Launch, dtype_bytes: int) -> dict:
    """Student weights, gradients and optimizer states per GPU (bytes) and on the CPU (offload), with their source."""
    frozen = params - trainable
    n = launch.processes
    if launch.zero_stage is None:  # torch.optim.AdamW: exp_avg and exp_avg_sq in the parameter's dtype
        states = {"weights": params * dtype_bytes, "gradients": trainable * dtype_bytes,
                  "optimizer": 2 * trainable * dtype_bytes, "cpu": 0,
                  "source": f"{dtype_bytes}-byte weights + gradients + 2 AdamW moments (torch.optim.AdamW)"}
        if n > 1:  # DDP's bucket copy of the gradients (accelerate leaves gradient_as_bucket_view off)
            states["gradients"] *= 2
            states["source"] += "; DDP gradient buckets"
        return states
    if launch.zero_stage in (1, 2):
        with deepspeed_logs_to_stderr():
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        cpu, gpu = estimate_zero2_model_states_mem_needs(trainable, num_gpus_per_node=n,
                                                         cpu_offload=launch.offload_optimizer,
                                                         additional_buffer_factor=1.5)
        # DeepSpeed: 2 = 16-bit params; 18 / N = 16-bit and 32-bit gradients, 32-bit master params, 2 Adam moments
        states = {"weights": 2 * params, "gradients": 0 if launch.offload_optimizer else 6 * trainable // n,
                  "optimizer": gpu - 2 * trainable - (0 if launch.offload_optimizer else 6 * trainable // n), "cpu": cpu,
                  "source": "DeepSpeed estimate_zero2_model_states_mem_needs + frozen 16-bit weights"}
        if launch.zero_stage == 1:  # stage 1 partitions the optimizer only: the 16-bit gradients stay whole
            states["gradients"] += 2 * trainable - 2 * trainable // n
            states["source"] += "; stage 1: 16-bit gradients not partitioned"
        return states
    with deepspeed_logs_to_stderr():
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    cpu, gpu, gathered = estimate_zero3_model_states_mem_needs(
        trainable, largest_layer, num_gpus_per_node=n, cpu_offload=launch.offload_optimizer,
        cpu_offload_params=launch.offload_param, zero_init=False, additional_buffer_factor=1.5)
    on_gpu = 0 if launch.offload_param else 1
    # DeepSpeed: 4 x largest layer (gathered), 18 / N = 16-bit params and gradients, 32-bit master params, 2 moments
    weights = gathered + on_gpu * (2 * frozen // n + 2 * trainable // n)
    return {"weights": weights, "gradients": on_gpu * (0 if launch.offload_optimizer else 2 * trainable // n),
            "optimizer": gpu - gathered - on_gpu * (2 * trainable // n) -
            on_gpu * (0 if launch.offload_optimizer else 2 * trainable // n), "cpu": cpu,
            "source": "DeepSpeed estimate_zero3_model_states_mem_needs (zero_init=False) + frozen 16-bit weights / N"}


def step_buffers(cfg: DictConfig, batch: Batch, vocab: int, student_itemsize: int,
                 teacher_itemsize: int, hidden: int, teacher_hidden: int, cached: bool) -> dict:
    """Bytes the step keeps beside the student's saved activations (csd/step.py micro_batch_sums), with notes."""
    rows, length = batch.rows, batch.length
    parts, notes = {}, []
    distil = distillation_enabled(cfg)
    chunk_rows = min(batch.positions, max(1, (CHUNK_BYTES // 4) // vocab))  # csd/losses/base.py: rows per chunk
    chunk = CHUNK_TEMPORARIES * 4 * chunk_rows * vocab
    if cfg.train.head == "fused" and distil:
        tokens = rows * length
        # hidden states and their gradient buffer (N, H), the head gradient accumulated in float32 (V, H)
        parts["fused_head_buffers"] = 2 * tokens * hidden * student_itemsize + 4 * vocab * hidden
        parts["teacher_hidden_states"] = tokens * teacher_hidden * teacher_itemsize
        parts["loss_chunks"] = chunk
        notes.append("train.head=fused: no (B, T, V) logits (csd/losses/fused.py)")
        return {"parts": parts, "notes": notes}
    # csd/step.py logits_at_rows: (N, vocab) logits at the N target positions, the head sliced to the shared
    # vocabulary before its matmul (no copy); N is bounded by rows x length unless the batch says
    positions = batch.positions
    notes.append(f"logits at {positions} positions per micro-batch" +
                 (" (bound: every position a target)" if batch.targets is None else " (the batch's targets)"))
    parts["student_logits"] = positions * vocab * student_itemsize
    kd_ratio = cfg.train.kd_ratio if distil else 0.0
    per_grad = positions * vocab * student_itemsize  # zeros_like of the (N, V) logits (csd/losses/base.py)
    parts["loss_gradient_buffers"] = per_grad * ((1 if distil else 0) + (1 if kd_ratio < 1.0 else 0))
    if distil:
        if cached:  # the cached rows through the teacher's head
            parts["teacher_logits_from_cache"] = positions * vocab * student_itemsize
        else:
            parts["teacher_logits"] = positions * vocab * teacher_itemsize
    parts["loss_chunks"] = chunk
    return {"parts": parts, "notes": notes}


FORWARD_ONLY = ("student_logits", "teacher_logits", "teacher_logits_from_cache", "loss_chunks", "teacher_forward",
                "teacher_hidden_states")


def step_peak(memory: dict, gradients_persist: bool) -> int:
    """The step's peak: what persists, plus the larger of the loss's forward (both models' logits, the loss's
    gradient buffer, its chunks) and the backward (the gradient buffer and the parameter gradients, which outlive
    the logits). Gradients that persist (ZeRO's buffers, or accumulated over micro-batches) count in both."""
    forward = sum(memory.get(key, 0) for key in FORWARD_ONLY)
    rest = sum(value for key, value in memory.items() if key not in FORWARD_ONLY and key != "gradients")
    gradients = memory.get("gradients", 0)
    return rest + (gradients + forward if gradients_persist else max(forward, gradients))


def flops_per_token(matmul_params: int, layers: int, attention_width: int, length: int) -> float:
    """Forward FLOPs per token: 2 per multiply-add of every weight matrix (the head included, tied or not) and the
    attention scores and mixing, 2 x 2 x layers x T x (heads x head_dim) (Kaplan et al. 2020, Table 1, no causal
    halving)."""
    return 2.0 * matmul_params + 4.0 * layers * length * attention_width


def student_pass_factor(trainable: int, params: int, checkpointing: bool) -> float:
    """Forward multiples of one training pass: forward 1 + backward 2 (input and weight gradients); a frozen base
    (LoRA) skips most weight gradients: 1 + 1; gradient checkpointing repeats the forward: +1."""
    backward = 2.0 if trainable > params / 2 else 1.0
    return 1.0 + backward + (1.0 if checkpointing else 0.0)


def gpu_hours(flops: float, mfu: float) -> dict:
    return {gpu: flops / (peak * 1e12 * mfu) / 3600 for gpu, peak in PEAK_TFLOPS.items()}


def as_gb(value: float) -> float:
    return round(value / GiB, 3)


def fits(total: float, gpu_memory: float) -> bool:
    return total <= gpu_memory * (1 - HEADROOM)


# --- one run ------------------------------------------------------------------------------------------------------
def data_facts(cfg: DictConfig, student_dir: Optional[Path]) -> dict:
    """Training examples, mean and longest encoded length, target positions: from the prepared data when it is here
    and the student's tokenizer is local; else the paper's split size (PAPER_SPLITS), lengths at max_length."""
    train = Path(str(cfg.data.path)) / str(cfg.data.splits.train) if cfg.data.get("path") else None
    if train is not None and train.exists() and student_dir is not None:
        from csd.models import load_tokenizer
        from csd.teacher_cache import run_splits, target_counts

        split = run_splits(cfg, load_tokenizer(cfg.model.student))["train"]
        lengths = [min(len(split[i]["input_ids"]), cfg.train.max_length) for i in range(len(split))]
        targets = sum(target_counts(split[i]) for i in range(len(split)))
        return {"examples": len(split), "mean_length": sum(lengths) / len(lengths), "longest": max(lengths),
                "target_positions": targets, "source": f"prepared data {train} (encoded)", "estimate": False}
    paper = PAPER_SPLITS.get(str(cfg.data.name))
    if paper is None:
        return {"examples": None, "mean_length": cfg.train.max_length, "longest": cfg.train.max_length,
                "target_positions": None, "source": f"no prepared data at {train} and no paper split size for "
                f"{cfg.data.name}", "estimate": True}
    examples, source = paper
    rows = examples * (2 if cfg.batches.name == "chat_pairs" else 1)
    return {"examples": examples, "mean_length": cfg.train.max_length, "longest": cfg.train.max_length,
            "target_positions": rows * (cfg.train.max_length - 1),
            "source": f"{source}; no prepared data at {train}: every sequence counted at train.max_length (an upper "
                      "bound)", "estimate": True}


def adapter_shapes(cfg: DictConfig) -> tuple[dict, list[str]]:
    """The student node to build; a LoRA adapter to keep training (lora_path) that is not here yet is described by the
    model config's lora (the adapter its SFT experiment trains)."""
    spec = OmegaConf.to_container(cfg.model.student, resolve=True)
    path = spec.get("lora_path")
    if not path or (Path(path) / "adapter_config.json").is_file():
        return spec, []
    model_file = CONFIG_DIR / "model" / f"{cfg.model.name}.yaml"
    lora = OmegaConf.load(model_file).student.get("lora")
    if lora is None:
        raise ValueError(f"model.student.lora_path {path} has no adapter_config.json and {model_file.name} has no lora")
    spec = {**spec, "lora_path": None, "lora": OmegaConf.to_container(lora)}
    return spec, [f"LoRA shapes from configs/model/{model_file.name} (no adapter at {path} yet)"]


def plan_run(cfg: DictConfig, launch: Launch, gpu_memory_gb: float = 80.0, mfu: float = DEFAULT_MFU,
             batch: Optional[Batch] = None, checkpointing: Optional[bool] = None, data: Optional[dict] = None) -> dict:
    """The plan of one training run under ``launch`` (its processes are the GPUs); ``batch`` / ``checkpointing``
    replace the config's (a suggested change)."""
    from csd.distributed import rows_per_example
    from csd.plan.probe import activation_bytes, local_config_dir, probe_model, saved_per_row
    from csd.teacher_cache import reads_cache

    per_example = rows_per_example(cfg)
    configured = Batch(cfg.train.batch_size * per_example, cfg.train.max_length, cfg.train.grad_accum,
                       launch.processes)
    batch = batch or configured
    checkpointing = bool(cfg.train.gradient_checkpointing) if checkpointing is None else checkpointing
    distil = distillation_enabled(cfg)
    student_spec, notes = adapter_shapes(cfg)
    student = probe_model(student_spec)
    teacher = probe_model(cfg.model.teacher) if distil else None
    cached = distil and reads_cache(cfg)
    data = data or data_facts(cfg, local_config_dir(cfg.model.student))
    length = min(batch.length, data["longest"])
    dtype = compute_dtype(cfg, launch)
    itemsize = bytes_of(dtype)
    weight_bytes = bytes_of(cfg.model.student.dtype)
    vocab = min(student.tokenizer_length, student.head_rows)

    states = model_states(student.params, student.trainable, student.largest_layer, launch, weight_bytes)
    saved = saved_per_row(student_spec, length, dtype)
    keep_scores = student.attn_implementation == "eager"
    activations = {gc: batch.rows * activation_bytes(saved, gc, keep_scores) for gc in (False, True)}
    lm_data = bool(cfg.train.get("lm_data"))
    memory = {"weights": states["weights"], "gradients": states["gradients"], "optimizer_states": states["optimizer"],
              "activations": activations[checkpointing] * (2 if lm_data else 1)}
    if lm_data:
        notes.append("train.lm_data: the corpus micro-batch's forward is kept until the joint backward (x2 activations)")
    autocast = launch.zero_stage is None and weight_bytes == 4 and itemsize == 2
    if autocast:  # autocast keeps a 16-bit copy of each weight matrix for backward
        from csd.plan.probe import linear_weight_params

        memory["autocast_weight_copies"] = 2 * linear_weight_params(student.module)
    teacher_itemsize = 2 if distil and (cfg.model.teacher.dtype in ("float16", "bfloat16") or itemsize == 2) else 4
    buffers = step_buffers(cfg, batch, vocab, itemsize,
                           teacher_itemsize, student.hidden, teacher.hidden if teacher else 0, cached)
    memory.update(buffers["parts"])
    notes += buffers["notes"]
    cache = None
    if distil:
        teacher_weight_bytes = bytes_of(cfg.model.teacher.dtype)
        if cached:
            memory["teacher"] = teacher.head_rows * teacher.hidden * teacher_weight_bytes
            stored = 2 if itemsize == 2 and cfg.train.head == "logits" or teacher_weight_bytes == 2 else 4
            cache = {"disk_gb": as_gb(data["target_positions"] * teacher.hidden * stored) if data["target_positions"]
                     else None, "bytes_per_target_position": teacher.hidden * stored,
                     "source": "csd/teacher_cache.py: the teacher's hidden states at the target positions, "
                               f"{stored}-byte; {data['source']}"}
        elif launch.zero_stage == 3:
            memory["teacher"] = (0 if launch.offload_param else 2 * teacher.params // launch.processes) + \
                2 * teacher.largest_layer
        else:
            memory["teacher"] = teacher.params * teacher_weight_bytes
        if not cached:  # its forward under no_grad: a layer's activations at a time (estimate: 4 x (B, T, H))
            memory["teacher_forward"] = 4 * batch.rows * length * teacher.hidden * teacher_itemsize
    total = step_peak(memory, gradients_persist=launch.zero_stage is not None or batch.grad_accum > 1)

    mean_length = min(data["mean_length"], length)
    step_tokens = batch.rows_per_step * mean_length
    student_flops = flops_per_token(student.matmul_params, student.layers, student.attention_width, mean_length) * \
        student_pass_factor(student.trainable, student.params, checkpointing) * step_tokens
    if lm_data:
        student_flops *= 1 + cfg.train.max_length / mean_length
    teacher_flops = 0.0
    if distil:
        teacher_flops = (2.0 * teacher.hidden * teacher.head_rows if cached else
                         flops_per_token(teacher.matmul_params, teacher.layers, teacher.attention_width, mean_length)) \
            * step_tokens
    flops_step = student_flops + teacher_flops
    examples_per_step = batch.rows_per_step // per_example
    steps = cfg.train.max_steps or (data["examples"] // examples_per_step * cfg.train.epochs if data["examples"]
                                    else None)
    flops_run = flops_step * steps if steps else None
    if cfg.batches.name in ("imitkd", "gkd"):
        notes.append("on-policy batches: the student's sampling is not counted in the FLOPs")
    return {
        "teacher_arch": teacher.arch if teacher else None, "student_arch": student.arch,
        "teacher_params": teacher.params if teacher else None, "student_params": student.params,
        "trainable_params": student.trainable, "launch": launch.file, "launch_kind": launch.kind,
        "gpus": launch.processes, "micro_batch_rows": batch.rows, "grad_accum": batch.grad_accum,
        "global_batch_examples": examples_per_step, "max_length": length,
        "gradient_checkpointing": checkpointing, "teacher_cache": cached,
        "memory_per_gpu_gb": {**{key: as_gb(value) for key, value in memory.items()}, "total": as_gb(total)},
        "memory_per_gpu_bytes": {**memory, "total": total},
        "activations_gb": {"without_checkpointing": as_gb(activations[False]),
                           "with_checkpointing": as_gb(activations[True])},
        "cpu_memory_gb": as_gb(states["cpu"]) if launch.offload_optimizer or launch.offload_param else None,
        "teacher_cache_disk": cache,
        "tokens_per_epoch": round(data["examples"] * per_example * mean_length) if data["examples"] else None,
        "steps": steps, "flops_per_step": flops_step, "flops_per_run": flops_run,
        "gpu_hours": {gpu: round(hours, 2) for gpu, hours in gpu_hours(flops_run, mfu).items()} if flops_run else None,
        "mfu": mfu, "gpu_memory_gb": gpu_memory_gb, "fits": fits(total, gpu_memory_gb * GiB),
        "notes": notes,
        "sources": {"architectures": f"{student.source}; {teacher.source if teacher else '-'}",
                    "model_states": states["source"],
                    "activations": f"counted: the tensors the student's forward saves for backward on the meta device "
                                   f"at ({batch.rows}, {length})" + ("" if keep_scores else
                                   f" ({student.attn_implementation} attention: no (T, T) scores kept)") +
                                   "; with checkpointing: each layer's input + one layer + the rest (estimate)",
                    "step_buffers": "estimate from csd/step.py and csd/losses (logits, gradient buffers, "
                                    f"{CHUNK_TEMPORARIES} float32 chunks of {CHUNK_BYTES >> 20} MiB)",
                    "teacher": "its weights" + (" / N under ZeRO-3" if launch.zero_stage == 3 else "") +
                               (", head only (teacher cache)" if cached else ""),
                    "tokens": data["source"] + (" (estimate)" if data["estimate"] else ""),
                    "flops": "estimate: 2 x matmul weights + attention per token; x3 trained, x2 LoRA, +1 checkpointing",
                    "gpu_hours": f"estimate at {mfu:.0%} of the dense bf16 peak "
                                 f"({', '.join(f'{k} {v:.0f} TFLOPS' for k, v in PEAK_TFLOPS.items())})",
                    "fits": f"total <= {1 - HEADROOM:.0%} of {gpu_memory_gb:g} GB (the rest: CUDA context, NCCL, "
                            "fragmentation)"},
    }

