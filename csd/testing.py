"""Tiny, offline tokenizers and models for tests and smoke runs (no hub access needed).

    tokenizer = make_tiny_tokenizer(tmp_dir)                  # byte-level BPE, chat template
    model = make_tiny_model(tokenizer, arch="llama")          # or "gpt2"
    path = save_tiny_checkpoint(tmp_dir / "tiny", arch="gpt2")  # both saved; from_pretrained(path)
    data = fixture_data_config(tmp_dir, "dolly", "dolly")           # configs/data/dolly.yaml on tests/fixtures/dolly

The tokenizer is a byte-level BPE trained in milliseconds on a fixed corpus, so it encodes
any text without unknown tokens. Special tokens: <pad> <s> </s> <unk> <|user|> <|assistant|>
<|end|>. With add_bos=True it prepends <s> like Llama tokenizers; by default it adds nothing
like GPT-2. Everything round-trips through save_pretrained / from_pretrained.
"""
from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>"]
CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\n### Input:\n### Response:\n",
    "The quick brown fox jumps over the lazy dog. A cat sat on the mat.",
    "Q: Natalia sold clips to 48 of her friends in April. How many clips did she sell? \n\nA: 48 + 24 = 72 #### 72",
    "Summarize the dialogue. #Person1#: Hello, how are you? #Person2#: I am fine, thank you.",
    "Translate Assamese sentence into English. This is the Assamese sentence: Here is the English translation:",
    "What is the capital of France? Paris is the capital and largest city of France.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 , . ! ? : ; ' \" ( ) - + = * / # $ %",
]


def make_tiny_tokenizer(save_dir: str | Path | None = None, vocab_size: int = 400, add_bos: bool = False):
    """A PreTrainedTokenizerFast (byte-level BPE) with eos/pad/bos and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS * 4, trainer=trainer)
    if add_bos:
        bos_id = backend.token_to_id("<s>")
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)])
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|end|>"], model_max_length=2048)
    tokenizer.chat_template = CHAT_TEMPLATE
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def make_tiny_model(tokenizer, arch: str = "llama", layers: int = 2, hidden: int = 32, seed: int = 0,
                    vocab_size: int | None = None):
    """A randomly initialised causal LM (llama or gpt2) sized for the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    vocab = vocab_size or len(tokenizer)
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    if arch == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                             max_position_embeddings=2048, tie_word_embeddings=False, **special)
    elif arch == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=2, n_positions=2048,
                            **special)
    else:
        raise ValueError(f"unknown tiny arch {arch!r} (llama | gpt2)")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def save_tiny_checkpoint(save_dir: str | Path, arch: str = "llama", layers: int = 2, hidden: int = 32,
                         seed: int = 0, add_bos: bool = False) -> Path:
    """Tokenizer + model saved together in `save_dir` (loadable with from_pretrained)."""
    save_dir = Path(save_dir)
    tokenizer = make_tiny_tokenizer(save_dir, add_bos=add_bos)
    make_tiny_model(tokenizer, arch=arch, layers=layers, hidden=hidden, seed=seed).save_pretrained(str(save_dir))
    return save_dir


FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def fixture_data_config(out_dir: str | Path, name: str, folder: str | Path, **overrides) -> str:
    """configs/data/<name>.yaml with its files read from ``folder`` (relative: under tests/fixtures) and any
    ``overrides`` applied, written to ``out_dir``; returns the yaml's path (usable as ``data=<path>``)."""
    import yaml

    from csd.config import CONFIG_DIR

    cfg = yaml.safe_load((CONFIG_DIR / "data" / f"{name}.yaml").read_text())
    cfg.update(path=str(FIXTURES / folder), **overrides)
    path = Path(out_dir) / f"{name}_fixture.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


# --- multi-process launches of the shipped accelerate files on CPU (tests, scripts/stress_launch.py) -------------
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on now: each launch gets its own, so two suites on one machine never collide."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(config_file: str, *overrides: str, processes: int = 2, module: str = "csd.train") -> list[str]:
    """The README's multi-process command (``accelerate launch --config_file configs/accelerate/<file>``) on
    ``processes`` CPU processes, fp32, on a free port."""
    import sys

    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
            "--mixed_precision", "no", "--main_process_port", str(free_port()),
            "--config_file", str(REPO / "configs" / "accelerate" / config_file), "-m", module, *overrides]


def launch_env() -> dict:
    """The environment of a CPU launch: one thread per process, offline, full tracebacks."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HYDRA_FULL_ERROR="1")
    return env


def tiny_run_overrides(teacher: str | Path, student: str | Path, output_root: str | Path) -> list[str]:
    """A few-step training run of the tiny pair on the tiny data set, writing <output_root>/default/run."""
    return ["model=tiny", f"model.teacher.name_or_path={teacher}", f"model.student.name_or_path={student}",
            "data=tiny", "train.max_length=96", "train.max_prompt_length=48", "train.eval_every=null",
            "train.save_every=null", f"output_root={output_root}", "run_name=run"]


def tiny_pair_overrides(scratch: str | Path) -> list[str]:
    """A tiny random pair (2-layer teacher, 1-layer student, saved once under ``scratch``) on the tiny data set: the
    benchmarks' and the CPU protocol's smoke runs."""
    scratch = Path(scratch)
    teacher, student = scratch / "tiny_teacher", scratch / "tiny_student"
    if not (student / "config.json").exists():
        save_tiny_checkpoint(teacher, layers=2, hidden=48, seed=1)
        save_tiny_checkpoint(student, layers=1, hidden=32, seed=2)
    return ["model=tiny", f"model.teacher.name_or_path={teacher}", f"model.student.name_or_path={student}", "data=tiny",
            "train.max_length=96", "train.max_prompt_length=48"]
