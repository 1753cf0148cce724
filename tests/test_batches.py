"""On-policy and chat batch sources (csd/batches) and the pretraining-corpus term, on tiny offline models.

Buffer and masking are checked against hand-written values; trainer runs are checked against runs that must
coincide (mixing probability 0 = references, resumed = uninterrupted) and, for chat pairs, against a float64
re-computation of CSD (S,S) = ½·Var_p(s − t) per token over both responses."""
from __future__ import annotations

import json
import math
import pickle
import types
from pathlib import Path

import pytest
import torch

from csd.config import compose
from csd.losses import LOSSES
from csd.batches import PretrainingBatches, ReplayBuffer, StudentSampler
from csd.data.pretraining import tokenised_corpus
from csd.testing import fixture_data_config, make_tiny_model, make_tiny_tokenizer, save_tiny_checkpoint
from csd.distributed import rows_per_example
from csd.train import run
from step_reference import record_batches, reference_step

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
CPU = types.SimpleNamespace(unwrap_model=lambda model: model, device=torch.device("cpu"), process_index=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is ~100× faster than two on a busy 2-core machine (OpenMP spin-waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(teacher_dir, student_dir); the teacher's head has 8 padding rows beyond the shared tokenizer."""
    root = tmp_path_factory.mktemp("onpolicy_models")
    tokenizer = make_tiny_tokenizer(root / "teacher")
    make_tiny_model(tokenizer, layers=2, hidden=48, seed=1, vocab_size=len(tokenizer) + 8).save_pretrained(root / "teacher")
    student = save_tiny_checkpoint(root / "student", arch="llama", layers=1, hidden=32, seed=2)
    return str(root / "teacher"), str(student)


@pytest.fixture(scope="module")
def corpus_config(tmp_path_factory):
    return fixture_data_config(tmp_path_factory.mktemp("corpus"), "openwebtext", "openwebtext")


def config(pair, out, *overrides):
    teacher, student = pair
    return compose(["model=tiny", f"model.teacher.name_or_path={teacher}", f"model.student.name_or_path={student}",
                    "data=tiny", "train.batch_size=4", "train.max_steps=2", "train.max_length=96",
                    "train.max_prompt_length=48", "train.eval_every=null", "train.save_every=null",
                    "train.save_final_model=false", f"output_root={out}", "run_name=x", *overrides])


# ---- replay buffer -------------------------------------------------------------------------------------------

def rows(*first_ids):
    return [{"input_ids": [i, i], "labels": [-100, i]} for i in first_ids]


def test_buffer_keeps_the_newest_rows_up_to_capacity():
    buffer = ReplayBuffer(capacity=3, seed=0)
    buffer.add(rows(0, 1))
    assert len(buffer) == 2
    buffer.add(rows(2, 3, 4))
    assert len(buffer) == 3 and [r["input_ids"][0] for r in buffer.rows] == [2, 3, 4]


def test_buffer_of_capacity_one_keeps_the_newest_row_and_zero_is_refused():
    buffer = ReplayBuffer(capacity=1, seed=0)
    buffer.add(rows(0, 1))
    assert buffer.sample(2) == rows(1)
    with pytest.raises(ValueError, match="replay buffer capacity must be at least 1, got 0"):
        ReplayBuffer(capacity=0, seed=0)


def test_buffer_samples_distinct_stored_rows_reproducibly():
    def draws(seed):
        buffer = ReplayBuffer(capacity=100, seed=seed)
        buffer.add(rows(*range(20)))
        return [[r["input_ids"][0] for r in buffer.sample(5)] for _ in range(4)]

    first = draws(10)
    assert all(len(set(d)) == 5 and set(d) <= set(range(20)) for d in first)
    assert draws(10) == first and draws(11) != first
    buffer = ReplayBuffer(capacity=100, seed=0)
    buffer.add(rows(*range(6)))
    assert sorted(r["input_ids"][0] for r in buffer.sample(50)) == list(range(6))  # asks more than stored: all once
    counts = [0] * 6
    for _ in range(3000):
        counts[buffer.sample(1)[0]["input_ids"][0]] += 1
    assert all(400 < c < 600 for c in counts)  # uniform: 500 each expected (seeded, so not flaky)
    with pytest.raises(RuntimeError, match="empty"):
        ReplayBuffer(capacity=2, seed=0).sample(1)


def test_buffer_state_round_trip_continues_identically():
    original = ReplayBuffer(capacity=8, seed=3)
    original.add(rows(*range(12)))
    original.sample(3)
    restored = ReplayBuffer(capacity=8, seed=99)
    restored.load_state_dict(pickle.loads(pickle.dumps(original.state_dict())))
    for step in range(5):
        original.add(rows(100 + step))
        restored.add(rows(100 + step))
        assert original.sample(4) == restored.sample(4)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=4, seed=0).load_state_dict(original.state_dict())


def gather_buffers(rank: int, port: int, out: Path) -> None:
    import torch.distributed as dist

    from csd.batches.sources import gather_per_process, pick_own_state

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        states = gather_per_process({"rows": [rank] * (rank + 1)})
        (out / f"rank{rank}.json").write_text(json.dumps([states, pick_own_state(states, rank)]))
    finally:
        dist.destroy_process_group()


def test_each_process_checkpoints_every_buffer_and_resumes_its_own(tmp_path):
    """Two gloo processes: each gets [buffer state of process 0, of process 1] (the one file accelerate writes) and
    takes back its own; a checkpoint holding fewer processes' states is refused."""
    from csd.batches.sources import pick_own_state
    from csd.testing import free_port

    torch.multiprocessing.start_processes(gather_buffers, args=(free_port(), tmp_path), nprocs=2, start_method="fork")
    both = [{"rows": [0]}, {"rows": [1, 1]}]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [both, both[rank]]
    with pytest.raises(ValueError, match=r"holds on-policy state for 1 process\(es\); resume with the same number"):
        pick_own_state(both[:1], 1)


class PromptSet(list):
    """A data set stand-in: len() and .examples."""

    @property
    def examples(self):
        return list(self)


def test_chat_pairs_refuse_response_sets_that_do_not_line_up():
    from csd.batches import ChatPairBatches, ReferenceBatches

    teacher = ReferenceBatches(PromptSet([{"prompt": "a"}, {"prompt": "b"}]), collate=None)
    ChatPairBatches(teacher, PromptSet([{"prompt": "a"}, {"prompt": "b"}]))
    for student in (PromptSet([{"prompt": "a"}]), PromptSet([{"prompt": "a"}, {"prompt": "c"}])):
        with pytest.raises(ValueError, match="do not line up prompt by prompt"):
            ChatPairBatches(teacher, student)


# ---- generated rows --------------------------------------------------------------------------------------------

class ScriptedLM(torch.nn.Module):
    """generate() appends fixed tokens, some after an EOS (HF keeps generating rows until all stop)."""

    def __init__(self, continuation):
        super().__init__()
        self.continuation, self.modes = torch.tensor(continuation), []

    def generate(self, input_ids, attention_mask, generation_config):
        self.modes.append(self.training)
        assert generation_config.do_sample and generation_config.top_k == 0 and generation_config.top_p == 1.0
        assert generation_config.max_new_tokens == 4
        return torch.cat([input_ids, self.continuation[: input_ids.shape[0]]], dim=1)


def test_sampler_settings_come_from_the_config(tmp_path):
    """batches.* sampling settings reach the sampler; max_new_tokens null = train.max_length − max_prompt_length
    (96 − 48); prompts are cut at max_prompt_length; chat data also stops at the template's turn end, <|end|>."""
    from csd.batches import build_sampler

    tokenizer = make_tiny_tokenizer()
    models = ("no/such-teacher", "no/such-student")
    sampling = ("batches=imitkd", "batches.temperature=0.7", "batches.top_k=5", "batches.top_p=0.9", "train.seed=3")
    sampler = build_sampler(config(models, tmp_path, *sampling), [], tokenizer, CPU)
    assert (sampler.max_new_tokens, sampler.prompts.max_prompt_length) == (48, 48)
    assert (sampler.temperature, sampler.top_k, sampler.top_p, sampler.seed) == (0.7, 5, 0.9, 3)
    assert sampler.extra_stop_ids == [tokenizer.eos_token_id]
    chat = build_sampler(config(models, tmp_path, *sampling, "data.prompt_format=chat", "batches.max_new_tokens=7"), [],
                         tokenizer, CPU)
    assert chat.max_new_tokens == 7 and chat.extra_stop_ids == [tokenizer.convert_tokens_to_ids("<|end|>")]
    model = types.SimpleNamespace(generation_config=types.SimpleNamespace(eos_token_id=[tokenizer.eos_token_id, 99]))
    assert sampler.stop_ids(model) == [tokenizer.eos_token_id, 99]  # the model's EOS ids too, each once
    assert chat.stop_ids(model) == [tokenizer.eos_token_id, 99, tokenizer.convert_tokens_to_ids("<|end|>")]


def test_sampling_seeds_are_distinct_per_call_and_process():
    from csd.batches.sampling import sampling_seed

    seeds = {sampling_seed(10, call, process) for call in range(1000) for process in range(8)}
    assert len(seeds) == 8000 and all(0 <= seed < 2**63 for seed in seeds)


def test_student_or_reference_follows_a_coin_seeded_by_the_run_seed():
    """GKD mixing (no buffer): micro-batch i trains on the student's samples iff the i-th draw of
    random.Random(train.seed) is below student_ratio, on every process alike; else on the references."""
    import random

    from csd.batches import StudentBatches

    class References:
        collate = staticmethod(lambda rows: ("student", rows))

        def __call__(self, indices, student):
            return ("reference", indices)

    source = StudentBatches(References(), lambda indices, student: [f"sample of {indices}"], 0.3, seed=7)
    coin = random.Random(7)
    expected = [("student", ["sample of 1"]) if coin.random() < 0.3 else ("reference", 1) for _ in range(40)]
    assert [source(1, None) for _ in range(40)] == expected
    assert 5 < sum(kind == "student" for kind, _ in expected) < 20


def test_generated_rows_mask_prompt_padding_and_tokens_after_eos():
    tokenizer = make_tiny_tokenizer()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    train_set = [{"input_ids": [10, 11, 50], "labels": [-100, -100, 50], "prompt_length": 2},
                 {"input_ids": [12, 51], "labels": [-100, 51], "prompt_length": 1}]
    model = ScriptedLM([[20, eos, 21, 22], [23, 24, 25, 26]])
    model.train()
    sampler = StudentSampler(train_set, tokenizer, CPU, max_new_tokens=4, seed=10)
    produced = sampler(torch.tensor([0, 1]), model)
    assert model.modes == [False] and model.training  # sampled in eval mode, train mode restored
    assert produced == [{"input_ids": [10, 11, 20, eos], "labels": [-100, -100, 20, eos]},   # 21, 22 after EOS: gone
                        {"input_ids": [12, 23, 24, 25, 26], "labels": [-100, 23, 24, 25, 26]}]  # no EOS: all kept
    from csd.data import TrainCollator

    batch = TrainCollator(pad)(produced)
    assert batch["input_ids"][0].tolist() == [10, 11, 20, eos, pad]
    assert batch["labels"][0].tolist() == [-100, -100, 20, eos, -100]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert sampler.calls == 1


@pytest.mark.parametrize("name", ["imitkd", "gkd"])
def test_student_batches_are_built_from_the_config(tmp_path, name):
    """The coin is random.Random(train.seed) on every process; ImitKD's buffer has batches.buffer_capacity rows and
    resumes this process's own state (process index 1 here)."""
    import random

    from csd.batches import ReferenceBatches, build_batch_source

    cfg = config(("no/such-teacher", "no/such-student"), tmp_path, f"batches={name}", "train.seed=3",
                 *(["batches.buffer_capacity=7"] if name == "imitkd" else []))
    second_process = types.SimpleNamespace(**{**vars(CPU), "process_index": 1})
    source = build_batch_source(cfg, ReferenceBatches([], None), make_tiny_tokenizer(), second_process)
    assert source.coin.getstate() == random.Random(3).getstate()
    if name == "imitkd":
        assert (source.buffer.capacity, source.process) == (7, 1)
    else:
        assert source.buffer is None


class RecordingLM(ScriptedLM):
    """Records what generate() is asked; the model's generation config lists a second EOS id (99)."""

    def __init__(self, continuation):
        super().__init__(continuation)
        self.generation_config, self.asked = types.SimpleNamespace(eos_token_id=[99]), []

    def generate(self, input_ids, attention_mask, generation_config):
        self.asked.append((attention_mask.tolist(), generation_config))
        return torch.cat([input_ids, self.continuation[: input_ids.shape[0]]], dim=1)


def test_sampler_asks_generate_for_left_padded_prompts_with_its_settings():
    tokenizer = make_tiny_tokenizer()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    train_set = [{"input_ids": [10, 11, 50], "prompt_length": 2}, {"input_ids": [12, 51], "prompt_length": 1}]
    model = RecordingLM([[20, eos], [21, eos]])
    sampler = StudentSampler(train_set, tokenizer, CPU, max_new_tokens=2, temperature=0.7, top_k=5, top_p=0.9, seed=10)
    for _ in range(3):
        sampler(torch.tensor([0, 1]), model)
    mask, asked = model.asked[0]
    assert mask == [[1, 1], [0, 1]]  # the shorter prompt is padded on the left
    assert (asked.do_sample, asked.temperature, asked.top_k, asked.top_p) == (True, 0.7, 5, 0.9)
    assert (asked.max_new_tokens, asked.pad_token_id, asked.eos_token_id) == (2, pad, [eos, 99])
    assert sampler.calls == 3  # call n samples under its own seed


def test_student_sampling_is_seeded_per_call_and_leaves_the_training_rng_alone():
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(tokenizer, layers=1, hidden=32)
    prompts = [tokenizer(text)["input_ids"] for text in ("Q: what is the capital of France?", "The quick brown fox")]
    train_set = [{"input_ids": ids, "prompt_length": len(ids)} for ids in prompts]

    def two_calls(seed):
        sampler = StudentSampler(train_set, tokenizer, CPU, max_new_tokens=12, seed=seed)
        return [sampler(torch.tensor([0, 1]), model) for _ in range(2)]

    torch.manual_seed(0)
    expected_stream = torch.rand(3)
    torch.manual_seed(0)
    first = two_calls(10)
    assert torch.equal(torch.rand(3), expected_stream)  # sampling ran in a forked RNG
    assert two_calls(10) == first and two_calls(20) != first and first[0] != first[1]
    for row, example in zip(first[0], train_set):
        prompt = example["input_ids"][: example["prompt_length"]]
        assert row["input_ids"][: len(prompt)] == prompt and row["labels"][: len(prompt)] == [-100] * len(prompt)
        assert row["labels"][len(prompt):] == row["input_ids"][len(prompt):] and len(row["input_ids"]) > len(prompt)


# ---- pretraining corpus ------------------------------------------------------------------------------------------

def test_corpus_is_documents_joined_by_eos_and_cut_into_chunks(corpus_config):
    from csd.data import load_data_config

    tokenizer = make_tiny_tokenizer()
    texts = ["a cat sat", "the dog"]
    expected = tokenizer(texts[0])["input_ids"] + [tokenizer.eos_token_id] + tokenizer(texts[1])["input_ids"] + [tokenizer.eos_token_id]
    assert tokenised_corpus(iter(texts), tokenizer).tolist() == expected

    def make(process):
        return PretrainingBatches.from_config(load_data_config(corpus_config), tokenizer, chunk_length=16,
                                              batch_size=2, seed=10, process=process, processes=2)

    rank0, rank1 = make(0), make(1)
    chunks = rank0.chunks.shape[0]
    assert chunks >= 8 and rank0.chunks.shape[1] == 16
    seen = []
    for _ in range(chunks // 4):
        a, b = rank0.next_batch(), rank1.next_batch()
        assert torch.equal(a["labels"], a["input_ids"]) and a["attention_mask"].all()
        seen += [tuple(r) for r in a["input_ids"].tolist()] + [tuple(r) for r in b["input_ids"].tolist()]
    assert len(set(seen)) == len(seen)  # processes take disjoint chunks; no chunk twice within a pass
    resumed = make(0)
    resumed.load_state_dict(rank0.state_dict())
    assert torch.equal(resumed.next_batch()["input_ids"], rank0.next_batch()["input_ids"])


# ---- trainer runs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("switch", ["batches=imitkd batches.mixed_alpha=0.0", "batches=gkd batches.student_ratio=0.0"])
def test_probability_zero_is_the_reference_run(pair, tmp_path, switch):
    reference = run(config(pair, tmp_path / "ref"))
    mixed = run(config(pair, tmp_path / "mixed", *switch.split()))
    assert [h["train/kd"] for h in mixed["history"]] == [h["train/kd"] for h in reference["history"]]
    sampled = run(config(pair, tmp_path / "sampled", "batches=gkd", "batches.student_ratio=1.0",
                         "batches.max_new_tokens=8"))
    assert sampled["history"][0]["train/kd"] != reference["history"][0]["train/kd"]


def test_imitkd_with_corpus_term_resumes_exactly(pair, tmp_path, corpus_config):
    common = ("batches=imitkd", "batches.max_new_tokens=8", f"train.lm_data={corpus_config}", "train.max_steps=3",
              "optim.lr=1e-3", "optim.scheduler=constant")
    full = run(config(pair, tmp_path / "full", *common))
    assert run(config(pair, tmp_path / "resumed", *common, "train.stop_after_steps=1")) == {"stopped_at": 1}
    checkpoint = next((tmp_path / "resumed").glob("default/x/checkpoints/step_*"))
    imitkd_state = torch.load(checkpoint / "custom_checkpoint_1.pkl", weights_only=False)
    assert len(imitkd_state["buffers"][0]["rows"]) == 4 and imitkd_state["sampler_calls"] == 1
    assert torch.load(checkpoint / "custom_checkpoint_2.pkl", weights_only=False) == {"consumed": 4}
    for row in imitkd_state["buffers"][0]["rows"]:
        targets = [i for i, label in enumerate(row["labels"]) if label != -100]
        assert targets and targets == list(range(targets[0], len(row["input_ids"])))  # prompt masked, rest targets
        assert len(row["input_ids"]) - targets[0] <= 8
    resumed = run(config(pair, tmp_path / "resumed", *common, "train.resume=auto"))
    assert [h["step"] for h in resumed["history"]] == [1, 2, 3]
    for a, b in zip(full["history"], resumed["history"]):
        for key in ("train/kd", "train/ce", "train/lm_ce"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
    assert all(math.isfinite(h["train/lm_ce"]) and h["train/lm_ce"] > 0 for h in full["history"])


def test_imitkd_trains_on_rows_drawn_from_the_buffer_filled_at_earlier_steps(pair, tmp_path, monkeypatch):
    """ImitKD as the release: each step's samples go into the replay buffer and the trained rows are drawn from the
    whole buffer, so rows sampled at earlier steps come back until they fall out. The student's samples are scripted:
    row i of sampler call c is [MARK + c, MARK + 20 + i, MARK + 40], so every trained row names the step that sampled
    it. Capacity 6 = the rows of the last 3 steps (batch 2)."""
    mark = 100

    def scripted_samples(self, indices, student):
        call, self.calls = self.calls, self.calls + 1
        return [{"input_ids": [mark + call, mark + 20 + i, mark + 40], "labels": [-100, mark + 20 + i, mark + 40]}
                for i in range(len(indices))]

    monkeypatch.setattr(StudentSampler, "__call__", scripted_samples)
    batches = record_batches(monkeypatch)
    run(config(pair, tmp_path, "batches=imitkd", "batches.buffer_capacity=6", "train.max_steps=12", "train.batch_size=2"))
    assert len(batches) == 12
    age_counts = {}
    for step, batch in enumerate(batches):
        sampled = [(ids[0] - mark, ids[1] - mark - 20) for ids in batch["input_ids"].tolist()]
        assert len(set(sampled)) == 2, sampled  # distinct rows
        for call, row in sampled:
            assert 0 <= step - call <= 2 and row in (0, 1), (step, sampled)  # sampled by now and still in the buffer
            age_counts[step - call] = age_counts.get(step - call, 0) + 1
    # rows of the step itself, of the step before and of two steps before are all trained on (24 rows in all)
    assert sorted(age_counts) == [0, 1, 2] and sum(age_counts.values()) == 24 and age_counts[0] < 24


@pytest.mark.parametrize("onpolicy", ["imitkd", "chat_pairs"])
@pytest.mark.parametrize("objective", sorted(LOSSES) + ["sft"])
def test_one_step_with_every_objective(pair, tmp_path, monkeypatch, onpolicy, objective):
    """The step's logged loss and gradient norm are the objective's float64 definition on the rows it trained on
    (sampled and drawn from the buffer, or both responses of each chat pair; the teacher's padded head cut)."""
    extra = ["batches.max_new_tokens=4"] if onpolicy == "imitkd" else chat_data()
    cfg = config(pair, tmp_path, f"batches={onpolicy}", f"loss={objective}", "train.max_steps=1", "train.batch_size=2",
                 "train.kd_ratio=0.0" if objective == "sft" else "train.kd_ratio=1.0", *extra)
    batches = record_batches(monkeypatch)
    summary = run(cfg)
    assert summary["steps"] == 1 and len(batches) == 1 and len(batches[0]["input_ids"]) == 2 * rows_per_example(cfg)
    expected, logged = reference_step(cfg, batches), summary["history"][0]
    key = "ce" if objective == "sft" else "kd"
    assert logged[f"train/{key}"] == pytest.approx(expected[key], rel=1e-4)
    assert logged["train/grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-4)


def chat_data():
    return ["data=chat_pairs", f"data.path={FIXTURES / 'chat_pairs'}",
            "data.splits.validation=train.jsonl"]


def test_chat_pairs_loss_is_the_token_mean_over_both_responses(pair, tmp_path):
    """train/kd of the first step (before any update) = Σ over the teacher- and student-response tokens of
    ½·Var_p(s − t) (p = student softmax, logits cut to the tokenizer length) ÷ their number."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from csd.data import encode_example, load_examples, response_end_ids

    cfg = config(pair, tmp_path, "batches=chat_pairs", "loss=csd", "train.max_steps=1", "train.batch_size=2", *chat_data())
    summary = run(cfg)
    teacher_dir, student_dir = pair
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    student = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float64).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float64).eval()
    total, tokens, per_response = 0.0, 0, {}
    for example in load_examples(cfg.data, "train", tokenizer):
        for key in ("teacher_response", "student_response"):
            encoded = encode_example(tokenizer, example["prompt"], example[key], 96, 48, end_ids=response_end_ids(tokenizer, "chat"))
            ids = torch.tensor([encoded["input_ids"]])
            with torch.no_grad():
                d = (student(ids).logits - teacher(ids).logits[..., : len(tokenizer)])[0, :-1]
                p = torch.softmax(student(ids).logits[0, :-1], dim=-1)
            per_token = 0.5 * ((p * d**2).sum(-1) - (p * d).sum(-1) ** 2)
            targets = torch.tensor(encoded["labels"][1:]) != -100
            total += float(per_token[targets].sum())
            tokens += int(targets.sum())
            per_response[key] = per_response.get(key, 0) + int(targets.sum())
    assert per_response["student_response"] > 0 and per_response["teacher_response"] > 0
    assert summary["history"][0]["train/kd"] == pytest.approx(total / tokens, rel=1e-4)


def test_corpus_term_is_lm_coef_times_its_own_token_mean(pair, tmp_path, corpus_config):
    """Pre-clipping gradient norm of one step (2 micro-batches × 2 rows) = ‖∇(CE_mean(references) +
    lm_coef·CE_mean(corpus chunks))‖, each mean over its own tokens, recomputed here in one piece."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from csd.data import TrainCollator, build_dataset, load_data_config
    from csd.models import load_tokenizer
    from csd.step import optimizer_windows

    cfg = config(pair, tmp_path, "loss=sft", "train.kd_ratio=0.0", f"train.lm_data={corpus_config}", "train.lm_coef=0.5",
                 "train.max_steps=1", "train.batch_size=2", "train.grad_accum=2")
    step = run(cfg)["history"][0]
    tokenizer = load_tokenizer(cfg.model.student)
    student = AutoModelForCausalLM.from_pretrained(pair[1], dtype=torch.float32)
    train_set = build_dataset(cfg.data, "train", tokenizer, 96, 48)
    window = optimizer_windows(len(train_set), cfg, 1, 0)[0]
    references = TrainCollator(tokenizer.pad_token_id)([train_set[int(i)] for i in window.flatten()])
    corpus = PretrainingBatches.from_config(load_data_config(corpus_config), tokenizer, chunk_length=96, batch_size=4,
                                            seed=cfg.train.seed).next_batch()

    def ce_mean(batch):
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100)

    corpus_ce = ce_mean(corpus)
    (ce_mean(references) + 0.5 * corpus_ce).backward()
    norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in student.parameters() if p.grad is not None))
    assert step["train/lm_ce"] == pytest.approx(corpus_ce.detach().item(), rel=1e-5)
    assert step["train/grad_norm"] == pytest.approx(norm, rel=1e-4)


@pytest.mark.parametrize("override, message", [
    ("batches.mixed_alpha=1.5", "batches.mixed_alpha=1.5 must be a probability"),
    ("batches.buffer_capacity=2", "batches.buffer_capacity=2 must hold at least one micro-batch"),
    ("batches.name=dagger", "batches.name='dagger' is not allowed; choose one of: reference, imitkd, gkd, chat_pairs"),
    ("train.lm_data=no_such_corpus", "no data config"),
])
def test_bad_onpolicy_config_fails_before_loading_models(tmp_path, override, message):
    cfg = config(("no/such-teacher", "no/such-student"), tmp_path, "batches=imitkd", override)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(cfg)


def test_chat_pairs_needs_pair_data(pair, tmp_path):
    with pytest.raises(ValueError, match="batches=chat_pairs needs teacher/student response pairs"):
        run(config(pair, tmp_path, "batches=chat_pairs"))
