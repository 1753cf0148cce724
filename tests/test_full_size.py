"""The paper's full-size pairs, set up by the project's own code on PyTorch's meta device (no weights, no download).

csd.architectures.meta_model builds each configs/model node from its public config.json fields (configs/arch/) with
transformers' own class and applies csd.models.derive_student (keep_layers, LoRA via peft); the checks below then run
the code paths a real run takes at these sizes: the vocabulary contract (csd.models.shared_vocab_size), the head the
fused loss reads (csd/step.py) and its refusal of Gemma 2's soft-capping (csd.models.refuse_fused_head_if_softcapped),
LoRA targets, keep_layers, gradient checkpointing, parameter counts.

"Published" parameter counts are the numbers the model's authors state, with the place they state them (PUBLISHED);
every count must be within 1% of its published number and equal a closed-form count from the config fields.
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from csd.architectures import arch_config, arch_id, meta_model, tokenizer_length
from csd.config import compose
from csd.models import (Models, TeacherHead, base_causal_lm, decoder_layers, head_of, head_size,
                        refuse_fused_head_if_softcapped, shared_vocab_size)

PAIRS = ["gpt2_xl_to_gpt2", "gpt2_xl_to_gpt2_medium", "openllama2_7b_to_3b", "gemma_7b_to_2b", "qwen25_7b_to_1p5b",
         "gemma2_9b_to_2b"]
# The model cards each pair's nodes describe (the plan's teacher_arch / student_arch).
CARDS = {"gpt2_xl_to_gpt2": ("gpt2-xl", "gpt2"), "gpt2_xl_to_gpt2_medium": ("gpt2-xl", "gpt2-medium"),
         "openllama2_7b_to_3b": ("openlm-research/open_llama_7b_v2", "openlm-research/open_llama_3b_v2"),
         "gemma_7b_to_2b": ("google/gemma-7b-it", "google/gemma-2b-it"),
         "qwen25_7b_to_1p5b": ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"),
         "gemma2_9b_to_2b": ("google/gemma-2-9b-it", "google/gemma-2-2b-it")}
ARCHS = sorted({card for pair in CARDS.values() for card in pair})

# (tokenizer length from the model card's tokenizer files, rows of the head in its config.json)
VOCAB = {"gpt2": (50257, 50257), "gpt2-medium": (50257, 50257), "gpt2-xl": (50257, 50257),
         "openlm-research/open_llama_3b_v2": (32000, 32000), "openlm-research/open_llama_7b_v2": (32000, 32000),
         "google/gemma-2b-it": (256000, 256000), "google/gemma-7b-it": (256000, 256000),
         "google/gemma-2-2b-it": (256000, 256000), "google/gemma-2-9b-it": (256000, 256000),
         # Qwen2.5: 151,643 BPE tokens + 22 added (ids 151643..151664) in a head padded to 151,936 / 152,064 rows
         "Qwen/Qwen2.5-1.5B-Instruct": (151665, 151936), "Qwen/Qwen2.5-7B-Instruct": (151665, 152064)}

# Published parameter counts: (total, where the authors state it). None: no count is published.
GEMMA_REPORT = "Gemma report (arXiv 2403.08295) Table 2, embedding + non-embedding parameters"
GEMMA2_REPORT = "Gemma 2 report (arXiv 2408.00118) Table 2, embedding + non-embedding parameters"
PUBLISHED = {
    "gpt2": (124e6, "model card openai-community/gpt2: 'the smallest version of GPT-2, with 124M parameters'"),
    "gpt2-medium": (355e6, "model card openai-community/gpt2-medium: 'the 355M parameter version of GPT-2'"),
    "gpt2-xl": (1558e6, "nanoGPT model.py GPT.from_pretrained: 'gpt2-xl ... # 1558M params' (the card says 1.5B)"),
    "openlm-research/open_llama_3b_v2": (None, "the card and README name it 3B only; checked by the closed form"),
    "openlm-research/open_llama_7b_v2": (6.7e9, "LLaMA paper (arXiv 2302.13971) Table 2: 7B = 6.7B params; "
                                                "OpenLLaMA reproduces LLaMA's architecture"),
    "google/gemma-2b-it": (524_550_144 + 1_981_884_416, GEMMA_REPORT),
    "google/gemma-7b-it": (786_825_216 + 7_751_248_896, GEMMA_REPORT),
    "Qwen/Qwen2.5-1.5B-Instruct": (1.54e9, "model card: 'Number of Parameters: 1.54B'"),
    "Qwen/Qwen2.5-7B-Instruct": (7.61e9, "model card: 'Number of Parameters: 7.61B'"),
    "google/gemma-2-2b-it": (590_118_912 + 2_024_517_888, GEMMA2_REPORT),
    "google/gemma-2-9b-it": (917_962_752 + 8_324_201_984, GEMMA2_REPORT),
}
# Non-embedding counts the Gemma reports state exactly (their embedding counts use the JAX vocabulary of 256,128 rows;
# the Hugging Face checkpoints have 256,000, so only the non-embedding part can match to the parameter).
NON_EMBEDDING = {"google/gemma-2b-it": 1_981_884_416, "google/gemma-7b-it": 7_751_248_896,
                 "google/gemma-2-2b-it": 2_024_517_888, "google/gemma-2-9b-it": 8_324_201_984}


@functools.lru_cache(maxsize=None)
def pair_config(pair: str):
    return compose([f"model={pair}"])


def node(pair: str, role: str):
    return pair_config(pair).model[role]


def built(pair: str, role: str) -> nn.Module:
    return meta_model(node(pair, role))


class CardTokenizer:
    """What shared_vocab_size reads of a tokenizer: get_vocab() and len(), with the card tokenizer's length."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length

    @functools.cache
    def get_vocab(self) -> dict:
        return {f"token{i}": i for i in range(self.length)}


def parameter_count(model: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def closed_form_count(config) -> int:
    """Parameters of a decoder from its config fields alone: embeddings (+ an untied head), per layer attention
    projections (+ Qwen2's q/k/v biases), the MLP (GPT-2: 4d wide with biases; the others: gated, 3 matrices) and
    norms (Gemma 2: four per layer), plus the final norm."""
    d, V = config.hidden_size, config.vocab_size
    if config.model_type == "gpt2":  # wte, wpe; per layer: qkv, proj, fc, fc-proj with biases, 2 LayerNorms; ln_f
        return V * d + config.n_positions * d + config.n_layer * (12 * d * d + 13 * d) + 2 * d
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    attention = d * q + 2 * d * kv + q * d + ((q + 2 * kv) if config.model_type == "qwen2" else 0)
    norms = (4 if config.model_type == "gemma2" else 2) * d
    layer = attention + 3 * d * config.intermediate_size + norms
    tied = config.tie_word_embeddings
    return V * d * (1 if tied else 2) + config.num_hidden_layers * layer + d


def test_every_paper_node_has_its_architecture():
    for pair, cards in CARDS.items():
        assert (arch_id(node(pair, "teacher")), arch_id(node(pair, "student"))) == cards, pair


def test_a_node_without_architecture_file_is_a_one_line_error():
    with pytest.raises(FileNotFoundError, match=r"no architecture file for model 'outputs/sft/best'") as error:
        meta_model({"name_or_path": "outputs/sft/best"})
    assert "\n" not in str(error.value) and "arch=" in str(error.value)


def test_a_broken_architecture_file_is_a_one_line_error_naming_it(tmp_path, monkeypatch):
    import json

    import csd.architectures

    monkeypatch.setattr(csd.architectures, "ARCH_DIR", tmp_path)
    (tmp_path / "org__broken.json").write_text('{"arch_id": "org/broken",')
    entry = {"arch_id": "org/partial", "model_card": "", "config_url": "", "read_from": [], "config": {}}
    (tmp_path / "org__partial.json").write_text(json.dumps(entry))
    for card, message in [("org/broken", "org__broken.json: not valid JSON"),
                          ("org/partial", "org__partial.json: missing tokenizer_length, config.model_type")]:
        with pytest.raises(ValueError, match=message) as error:
            tokenizer_length({"name_or_path": card})
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("card", ARCHS)
def test_parameter_count_matches_the_published_size(card):
    model = meta_model({"name_or_path": card})
    assert all(p.is_meta for p in model.parameters())
    total = parameter_count(model)
    assert total == closed_form_count(arch_config({"name_or_path": card}))
    published, source = PUBLISHED[card]
    if published is not None:
        assert abs(total - published) / published < 0.01, f"{card}: {total:,} vs {published:,.0f} ({source})"
    if card in NON_EMBEDDING:
        assert total - model.get_input_embeddings().weight.numel() == NON_EMBEDDING[card]


@pytest.mark.parametrize("card", ARCHS)
def test_head_rows_and_tokenizer_length_are_the_cards(card):
    tokens, rows = VOCAB[card]
    assert tokenizer_length({"name_or_path": card}) == tokens
    assert head_size(meta_model({"name_or_path": card})) == rows


@pytest.mark.parametrize("pair", PAIRS)
def test_vocabulary_contract_compares_the_shared_tokenizer_length(pair):
    teacher, student = built(pair, "teacher"), built(pair, "student")
    tokens = tokenizer_length(node(pair, "student"))
    assert tokenizer_length(node(pair, "teacher")) == tokens
    tokenizer = CardTokenizer(tokens)
    assert shared_vocab_size(tokenizer, tokenizer, student, teacher) == tokens
    # from a teacher cache the teacher is its head alone: the same contract
    assert shared_vocab_size(tokenizer, tokenizer, student, head_of(teacher)) == tokens
    longer = CardTokenizer(min(head_size(student), head_size(teacher)) + 1)
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        shared_vocab_size(longer, longer, student, teacher)


@pytest.mark.parametrize("pair", PAIRS)
def test_fused_head_reads_the_output_heads_and_refuses_soft_capping(pair):
    """What csd/step.py's fused branch reads: base_causal_lm(student).get_output_embeddings().weight[:vocab], the
    teacher's likewise (or its TeacherHead from a cache); Gemma 2 (final_logit_softcapping) is refused."""
    teacher, student = built(pair, "teacher"), built(pair, "student")
    vocab = tokenizer_length(node(pair, "student"))
    for model in (teacher, student):
        config = base_causal_lm(model).config
        head = base_causal_lm(model).get_output_embeddings().weight
        assert head[:vocab].shape == (vocab, config.hidden_size)
        assert (head is base_causal_lm(model).get_input_embeddings().weight) == config.tie_word_embeddings
    cached_head = head_of(teacher)
    hidden = torch.empty(3, base_causal_lm(teacher).config.hidden_size, device="meta")
    assert cached_head.logits(hidden, vocab).shape == (3, vocab)
    softcapped = pair == "gemma2_9b_to_2b"
    assert cached_head.softcap == (30.0 if softcapped else None)
    tokenizer = CardTokenizer(vocab)
    for models in (Models(student, tokenizer, teacher, vocab), Models(student, tokenizer, vocab=vocab,
                                                                         teacher_head=cached_head)):
        if softcapped:
            with pytest.raises(ValueError, match="soft-capping of the student and teacher"):
                refuse_fused_head_if_softcapped(models)
        else:
            refuse_fused_head_if_softcapped(models)


LORA_PAIRS = [pair for pair in PAIRS if node(pair, "student").get("lora")]


def test_the_paper_pairs_with_lora():
    assert LORA_PAIRS == ["openllama2_7b_to_3b", "qwen25_7b_to_1p5b", "gemma2_9b_to_2b"]


@pytest.mark.parametrize("pair", LORA_PAIRS)
def test_lora_targets_exist_and_train_only_the_adapters(pair):
    spec = node(pair, "student")
    lora = spec.lora
    config = arch_config(spec)
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        plain = AutoModelForCausalLM.from_config(config)
    linears = {name: module for name, module in plain.named_modules() if isinstance(module, nn.Linear)}
    student = meta_model(spec)
    wrapped = [name for name, module in student.named_modules() if hasattr(module, "lora_A")]
    expected_trainable = 0
    for target in lora.target_modules:
        matching = [module for name, module in linears.items() if name.split(".")[-1] == target]
        assert len(matching) == config.num_hidden_layers, f"{target}: {len(matching)} Linear modules in {pair}"
        assert sum(name.split(".")[-1] == target for name in wrapped) == config.num_hidden_layers
        expected_trainable += sum(lora.r * (m.in_features + m.out_features) for m in matching)
    assert len(wrapped) == len(lora.target_modules) * config.num_hidden_layers
    assert parameter_count(student, trainable=True) == expected_trainable
    assert parameter_count(student) == parameter_count(plain) + expected_trainable


@pytest.mark.parametrize("card", ARCHS)
def test_keep_layers_cuts_the_full_size_model(card):
    config = arch_config({"name_or_path": card})
    layers = config.num_hidden_layers
    full = meta_model({"name_or_path": card})
    cut = meta_model({"name_or_path": card, "keep_layers": [0, layers - 1]})
    assert len(decoder_layers(cut)) == 2 and cut.config.num_hidden_layers == 2
    per_layer = sum(p.numel() for p in decoder_layers(full)[0].parameters())
    assert parameter_count(cut) == parameter_count(full) - (layers - 2) * per_layer
    if getattr(config, "layer_types", None):  # Gemma 2 alternates sliding and full attention: the cut keeps each kind
        assert cut.config.layer_types == [config.layer_types[0], config.layer_types[-1]]
    with pytest.raises(ValueError, match=rf"must be non-empty indices in \[0, {layers}\)"):
        meta_model({"name_or_path": card, "keep_layers": [layers]})


@pytest.mark.parametrize("pair", PAIRS)
def test_gradient_checkpointing_reaches_every_decoder_layer(pair):
    student = built(pair, "student")
    # as csd.distiller.Distiller.setup enables it on models.student (a PeftModel when the node has lora)
    student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = decoder_layers(base_causal_lm(student))
    assert base_causal_lm(student).is_gradient_checkpointing
    assert all(layer.gradient_checkpointing for layer in layers)
