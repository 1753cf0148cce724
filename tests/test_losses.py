"""Tests for `csd.losses` against independent, deliberately naive float64 definitions.

Every reference below is written from the mathematical definition (see docs / PAPER.md), not from the
library's code:
- CSD is the O(V^2) pairwise double sum  L = 1/4 sum_y sum_x a(y) b(x) ((s_x - s_y) - (t_x - t_y))^2
  with a, b held constant (detached);
- DLD is  L = sum_x w(x) (s'_x - t'_x)^2 / 4  with w detached and the normalisation differentiated;
- the baselines are the textbook divergences between p_T = softmax(t) and p_S = softmax(s).
The reference gradients come from float64 autograd on those definitions.
"""

import math

import pytest
import torch

from csd.losses import LOSSES, fused_linear_loss, get_loss

IGNORE = -100
RTOL = 1e-4

WEIGHTINGS = ["SS", "US", "TS", "ST", "UU", "TT", "SU", "MM", "MS"]
DLD_WEIGHTS = ["S", "T", "U"]
DLD_NORMALIZATIONS = ["none", "no", "mean", "min", "max", "std", "range"]
BASELINES = ["fkl", "rkl", "sym_kl", "jeffreys", "tvd", "js", "sfkl", "srkl", "ab"]


# ----------------------------------------------------------------------------------------------
# Independent float64 references. Each takes rows s, t of shape (N, V) and returns (N,) losses.
# ----------------------------------------------------------------------------------------------

def _weight_row(letter, s, t, temperature, mix_alpha):
    """One CSD weighting distribution, held constant: U = 1/V, S = softmax(s/tau),
    T = softmax(t/tau), M = mix_alpha * T + (1 - mix_alpha) * S."""
    vocab = s.shape[-1]
    student_probs = torch.softmax(s.detach() / temperature, dim=-1)
    teacher_probs = torch.softmax(t.detach() / temperature, dim=-1)
    if letter == "U":
        return torch.full_like(s, 1.0 / vocab).detach()
    if letter == "S":
        return student_probs
    if letter == "T":
        return teacher_probs
    if letter == "M":
        return mix_alpha * teacher_probs + (1.0 - mix_alpha) * student_probs
    raise AssertionError(letter)


def ref_csd_rows(s, t, temperature=1.0, weighting="SS", mix_alpha=0.15):
    """L = 1/4 sum_y sum_x a(y) b(x) ((s[x]-s[y]) - (t[x]-t[y]))^2, as an explicit V x V tensor."""
    a = _weight_row(weighting[0], s, t, temperature, mix_alpha)  # indexed by y
    b = _weight_row(weighting[1], s, t, temperature, mix_alpha)  # indexed by x
    # pair[n, y, x] = (s[x] - s[y]) - (t[x] - t[y])
    pair = (s[:, None, :] - s[:, :, None]) - (t[:, None, :] - t[:, :, None])
    return 0.25 * (a[:, :, None] * b[:, None, :] * pair**2).sum(dim=(1, 2))


def _normalize_row(z, mode):
    """Table 5 normalisations as the authors' release defines them, each row on its own:
    std divides by the unbiased (V - 1) standard deviation plus 1e-9; range maps onto [-1, 1]."""
    if mode in ("none", "no"):
        return z
    if mode == "mean":
        return z - z.mean(-1, keepdim=True)
    if mode == "min":
        return z - z.min(-1, keepdim=True).values
    if mode == "max":
        return z - z.max(-1, keepdim=True).values
    if mode == "std":
        centred = z - z.mean(-1, keepdim=True)
        unbiased_std = ((centred**2).sum(-1, keepdim=True) / (z.shape[-1] - 1)).sqrt()
        return centred / (unbiased_std + 1e-9)
    if mode == "range":
        low = z.min(-1, keepdim=True).values
        high = z.max(-1, keepdim=True).values
        return 2 * (z - low) / (high - low + 1e-9) - 1
    raise AssertionError(mode)


def ref_dld_rows(s, t, weight="S", normalize="none", temperature=1.0):
    """L = sum_x w(x) (norm(s)[x] - norm(t)[x])^2 / 4, w in {S, T, U} detached."""
    w = _weight_row(weight, s, t, temperature, mix_alpha=0.0)
    return (w * (_normalize_row(s, normalize) - _normalize_row(t, normalize)) ** 2).sum(-1) / 4


def _kl(p, q):
    """KL(p || q) = sum p log(p / q), with 0 log 0 = 0."""
    terms = p * (torch.log(p) - torch.log(q))
    return torch.where(p > 0, terms, torch.zeros_like(terms)).sum(-1)


def ref_baseline_rows(name, s, t, lam=None, alpha=0.2, beta=0.7):
    p_t = torch.softmax(t.detach(), dim=-1)
    p_s = torch.softmax(s, dim=-1)
    if name == "fkl":
        return _kl(p_t, p_s)
    if name == "rkl":
        return _kl(p_s, p_t)
    if name == "sym_kl":
        lam = 0.9 if lam is None else lam
        return (1 - lam) * _kl(p_t, p_s) + lam * _kl(p_s, p_t)
    if name == "jeffreys":
        return _kl(p_t, p_s) + _kl(p_s, p_t)
    if name == "tvd":
        return 0.5 * (p_t - p_s).abs().sum(-1)
    if name == "js":
        lam = 0.9 if lam is None else lam
        mixture = (1 - lam) * p_t + lam * p_s
        return lam * _kl(p_s, mixture) + (1 - lam) * _kl(p_t, mixture)
    if name == "sfkl":
        lam = 0.1 if lam is None else lam
        return _kl(p_t, lam * p_t + (1 - lam) * p_s)
    if name == "srkl":
        lam = 0.1 if lam is None else lam
        return _kl(p_s, (1 - lam) * p_t + lam * p_s)
    if name == "ab":
        p, q = p_t, p_s
        total = alpha + beta
        terms = p**alpha * q**beta - alpha / total * p**total - beta / total * q**total
        return -terms.sum(-1) / (alpha * beta)
    raise AssertionError(name)


def ref_rows(name, s, t, **kwargs):
    if name == "csd":
        return ref_csd_rows(s, t, **kwargs)
    if name == "dld":
        return ref_dld_rows(s, t, **kwargs)
    return ref_baseline_rows(name, s, t, **kwargs)


def reference(name, student, teacher, labels, reduction="mean", **kwargs):
    """Float64 value and student-logit gradient of the masked objective; only kept rows are computed."""
    s = student.detach().double().requires_grad_(True)
    t = teacher.detach().double()
    vocab = s.shape[-1]
    keep = (labels != IGNORE).reshape(-1)
    per_token = ref_rows(name, s.reshape(-1, vocab)[keep], t.reshape(-1, vocab)[keep], **kwargs)
    value = per_token.sum() if reduction == "sum" else per_token.mean()
    value.backward()
    return value.detach(), s.grad


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def make_batch(seed=0, batch=3, length=5, vocab=23, dtype=torch.float64, scale=3.0):
    """Random student / teacher logits (not flat: scale ~3) and labels with some ignored positions."""
    gen = torch.Generator().manual_seed(seed)
    student = (scale * torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64)).to(dtype)
    teacher = (scale * torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, vocab, (batch, length), generator=gen)
    labels[0, 0] = IGNORE
    labels[1, 3] = IGNORE
    labels[2, 4] = IGNORE
    return student, teacher, labels


def library(name, student, teacher, labels, reduction="mean", **kwargs):
    """Library value and gradient w.r.t. the student logits."""
    s = student.detach().clone().requires_grad_(True)
    value = get_loss(name, **kwargs)(s, teacher.detach().clone(), labels, reduction=reduction)
    assert value.dim() == 0, f"loss must be a scalar, got shape {tuple(value.shape)}"
    value.backward()
    return value.detach(), s.grad


def assert_rel_close(actual, expected, rtol=RTOL, what=""):
    """max |actual - expected| <= rtol * max |expected| (plain relative error for scalars)."""
    actual = actual.detach().double()
    expected = expected.detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values in {actual}"
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rtol * scale, f"{what}: max abs error {err:.3e} > {rtol:g} * {scale:.3e}"


def check_against_reference(name, dtype=torch.float64, seed=0, **kwargs):
    student, teacher, labels = make_batch(seed=seed, dtype=dtype)
    value, grad = library(name, student, teacher, labels, **kwargs)
    ref_value, ref_grad = reference(name, student, teacher, labels, **kwargs)
    assert_rel_close(value, ref_value, what=f"{name} {kwargs} value")
    assert_rel_close(grad, ref_grad, what=f"{name} {kwargs} gradient")


# Objectives exercised by the generic tests (masking, reduction, bf16, padded vocabulary, ...).
ALL_CONFIGS = (
    [("csd", {"weighting": w}) for w in WEIGHTINGS]
    + [("csd", {"weighting": "SS", "temperature": 1.5})]
    + [("dld", {"weight": w, "normalize": n}) for w in DLD_WEIGHTS for n in DLD_NORMALIZATIONS]
    + [(name, {}) for name in BASELINES]
)


def config_id(config):
    name, kwargs = config
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


# ----------------------------------------------------------------------------------------------
# The reference itself: the naive double sum agrees with the paper's closed-form gradient
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_reference_double_sum_matches_closed_form_gradient(weighting):
    """Guards the reference: grad = 1/2 [b (d - E_a d) + a (d - E_b d)], d = s - t."""
    student, teacher, _ = make_batch(seed=1)
    s = student.reshape(-1, student.shape[-1]).clone().requires_grad_(True)
    t = teacher.reshape(-1, teacher.shape[-1])
    ref_csd_rows(s, t, temperature=1.5, weighting=weighting).sum().backward()
    a = _weight_row(weighting[0], s, t, 1.5, 0.15)
    b = _weight_row(weighting[1], s, t, 1.5, 0.15)
    d = (s - t).detach()
    expected = 0.5 * (b * (d - (a * d).sum(-1, keepdim=True)) + a * (d - (b * d).sum(-1, keepdim=True)))
    assert_rel_close(s.grad, expected, rtol=1e-10, what="closed form")


# ----------------------------------------------------------------------------------------------
# Registry and value / gradient against the references
# ----------------------------------------------------------------------------------------------

def test_registry_lists_every_objective():
    for name in ["csd", "dld", *BASELINES]:
        assert name in LOSSES, f"{name!r} missing from LOSSES: {sorted(LOSSES)}"


@pytest.mark.parametrize("temperature", [1.0, 1.5])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_csd_matches_pairwise_double_sum(weighting, temperature, dtype):
    check_against_reference("csd", dtype=dtype, weighting=weighting, temperature=temperature)


def test_csd_default_kwargs_are_ss_temperature_one():
    student, teacher, labels = make_batch(seed=2)
    value, grad = library("csd", student, teacher, labels)
    ref_value, ref_grad = reference("csd", student, teacher, labels, weighting="SS", temperature=1.0)
    assert_rel_close(value, ref_value, what="default value")
    assert_rel_close(grad, ref_grad, what="default gradient")


@pytest.mark.parametrize("weighting", ["MM", "MS"])
def test_csd_mix_alpha_is_honoured(weighting):
    check_against_reference("csd", weighting=weighting, mix_alpha=0.4, temperature=1.5)


@pytest.mark.parametrize("temperature", [1.0, 1.5])
def test_csd_ss_is_half_variance_with_official_surrogate_gradient(temperature):
    """(S,S): L = 1/2 Var_p(d); grad = p (d - E_p d), p = softmax(s / tau), d = s - t."""
    student, teacher, labels = make_batch(seed=3)
    value, grad = library("csd", student, teacher, labels, weighting="SS", temperature=temperature)

    keep = labels != IGNORE
    p = torch.softmax(student / temperature, dim=-1)
    d = student - teacher
    mean_d = (p * d).sum(-1, keepdim=True)
    variance = (p * (d - mean_d) ** 2).sum(-1)
    assert_rel_close(value, 0.5 * variance[keep].mean(), what="half variance")
    surrogate_grad = p * (d - mean_d) * keep[..., None] / keep.sum()
    assert_rel_close(grad, surrogate_grad, what="surrogate gradient")


@pytest.mark.parametrize("normalize", DLD_NORMALIZATIONS)
@pytest.mark.parametrize("weight", DLD_WEIGHTS)
def test_dld_matches_definition(weight, normalize):
    check_against_reference("dld", weight=weight, normalize=normalize)


def test_reference_normalisations_by_hand():
    """Guards the reference on one row z = (0, 1, 5): mean 2, unbiased std sqrt(7) (population: sqrt(14/3))."""
    z = torch.tensor([[0.0, 1.0, 5.0]], dtype=torch.float64)
    expected = {
        "range": [-1.0, -0.6, 1.0],
        "std": [-2 / math.sqrt(7), -1 / math.sqrt(7), 3 / math.sqrt(7)],
        "min": [0.0, 1.0, 5.0],
        "max": [-5.0, -4.0, 0.0],
        "mean": [-2.0, -1.0, 3.0],
    }
    for mode, row in expected.items():
        assert_rel_close(_normalize_row(z, mode), torch.tensor([row], dtype=torch.float64), rtol=1e-8, what=mode)


def test_dld_no_is_an_alias_of_none():
    student, teacher, labels = make_batch(seed=5)
    assert_rel_close(library("dld", student, teacher, labels, normalize="no")[0],
                     library("dld", student, teacher, labels, normalize="none")[0], rtol=0, what="no vs none")


@pytest.mark.parametrize("weight", ["S", "T"])
def test_dld_temperature_enters_the_weights(weight):
    check_against_reference("dld", weight=weight, normalize="mean", temperature=1.5)


def test_dld_defaults_are_student_weight_no_normalisation():
    student, teacher, labels = make_batch(seed=4)
    value, grad = library("dld", student, teacher, labels)
    ref_value, ref_grad = reference("dld", student, teacher, labels, weight="S", normalize="none")
    assert_rel_close(value, ref_value, what="default value")
    assert_rel_close(grad, ref_grad, what="default gradient")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_matches_textbook_divergence(name, dtype):
    check_against_reference(name, dtype=dtype)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("sym_kl", {"lam": 0.5}),
        ("js", {"lam": 0.5}),
        ("sfkl", {"lam": 0.3}),
        ("srkl", {"lam": 0.3}),
        ("ab", {"alpha": 0.5, "beta": 0.4}),
        ("ab", {"alpha": 1.0, "beta": 0.3}),
    ],
)
def test_baseline_non_default_kwargs_are_honoured(name, kwargs):
    student, teacher, labels = make_batch(seed=5)
    # The non-default setting must give a different number than the default one...
    default_value, _ = reference(name, student, teacher, labels)
    other_value, _ = reference(name, student, teacher, labels, **kwargs)
    assert abs(default_value - other_value) > 1e-3 * abs(default_value)
    # ...and the library must follow it.
    check_against_reference(name, seed=5, **kwargs)


# ----------------------------------------------------------------------------------------------
# Invariances, masking, reductions
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 1.5])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("shifted", ["student", "teacher"])
def test_csd_is_shift_invariant_per_token(weighting, temperature, shifted):
    student, teacher, labels = make_batch(seed=6)
    gen = torch.Generator().manual_seed(7)
    offsets = 10.0 * torch.randn(*student.shape[:-1], 1, generator=gen, dtype=student.dtype)
    kwargs = {"weighting": weighting, "temperature": temperature}
    value, grad = library("csd", student, teacher, labels, **kwargs)
    if shifted == "student":
        shifted_value, shifted_grad = library("csd", student + offsets, teacher, labels, **kwargs)
    else:
        shifted_value, shifted_grad = library("csd", student, teacher + offsets, labels, **kwargs)
    assert_rel_close(shifted_value, value, what="shifted value")
    assert_rel_close(shifted_grad, grad, what="shifted gradient")


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_ignored_positions_do_not_matter(config):
    name, kwargs = config
    student, teacher, labels = make_batch(seed=8)
    ignored = labels == IGNORE
    value, grad = library(name, student, teacher, labels, **kwargs)

    # Replace the ignored rows by unrelated logits: nothing may change.
    gen = torch.Generator().manual_seed(9)
    other_student, other_teacher = student.clone(), teacher.clone()
    other_student[ignored] = 8.0 * torch.randn(int(ignored.sum()), student.shape[-1], generator=gen, dtype=student.dtype)
    other_teacher[ignored] = 8.0 * torch.randn(int(ignored.sum()), student.shape[-1], generator=gen, dtype=student.dtype)
    other_value, other_grad = library(name, other_student, other_teacher, labels, **kwargs)
    assert_rel_close(other_value, value, what="value with other ignored rows")
    assert torch.all(grad[ignored] == 0), "ignored positions must get zero gradient"
    assert torch.all(other_grad[ignored] == 0), "ignored positions must get zero gradient"

    # The mean is over kept tokens only: equals the reference computed on the kept rows.
    ref_value, ref_grad = reference(name, student, teacher, labels, **kwargs)
    assert_rel_close(value, ref_value, what="masked mean")
    assert_rel_close(grad, ref_grad, what="masked gradient")


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_reduction_sum(config):
    name, kwargs = config
    student, teacher, labels = make_batch(seed=10)
    value, grad = library(name, student, teacher, labels, reduction="sum", **kwargs)
    ref_value, ref_grad = reference(name, student, teacher, labels, reduction="sum", **kwargs)
    assert_rel_close(value, ref_value, what="sum value")
    assert_rel_close(grad, ref_grad, what="sum gradient")
    mean_value, _ = library(name, student, teacher, labels, reduction="mean", **kwargs)
    assert_rel_close(value, mean_value * (labels != IGNORE).sum(), what="sum = mean * kept")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_all_ignored_batch_gives_zero_and_zero_gradient(config, reduction):
    name, kwargs = config
    student, teacher, labels = make_batch(seed=11)
    labels = torch.full_like(labels, IGNORE)
    value, grad = library(name, student, teacher, labels, reduction=reduction, **kwargs)
    assert torch.isfinite(value) and value.item() == 0.0, f"all-ignored loss is {value}"
    assert grad is not None and torch.all(grad == 0), "all-ignored gradient must be exactly zero (no NaN)"


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_gradient_flows_only_to_student(config):
    name, kwargs = config
    student, teacher, labels = make_batch(seed=12)
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    get_loss(name, **kwargs)(s, t, labels).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None or torch.all(t.grad == 0), "teacher logits must be treated as constants"


# ----------------------------------------------------------------------------------------------
# Precision and padded vocabularies
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_bfloat16_inputs_are_close_to_float64(config):
    name, kwargs = config
    student, teacher, labels = make_batch(seed=13, dtype=torch.bfloat16)
    s = student.clone().requires_grad_(True)
    value = get_loss(name, **kwargs)(s, teacher, labels)
    value.backward()
    assert s.grad.dtype == torch.bfloat16, f"gradient dtype {s.grad.dtype}"
    # Same (bf16-rounded) inputs in float64: only the computation may differ.
    ref_value, ref_grad = reference(name, student, teacher, labels, **kwargs)
    assert_rel_close(value.float(), ref_value, rtol=2e-2, what="bf16 value")
    assert_rel_close(s.grad.float(), ref_grad, rtol=2e-2, what="bf16 gradient")


def padded(student, teacher, pad):
    """Append `pad` vocabulary columns that are -inf in both student and teacher."""
    minus_inf = torch.full((*student.shape[:-1], pad), -math.inf, dtype=student.dtype)
    return torch.cat([student, minus_inf], -1), torch.cat([teacher, minus_inf], -1)


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_padded_vocabulary_gives_finite_value_and_gradient(config):
    name, kwargs = config
    student, teacher, labels = make_batch(seed=14, dtype=torch.float32)
    padded_student, padded_teacher = padded(student, teacher, pad=4)
    value, grad = library(name, padded_student, padded_teacher, labels, **kwargs)
    assert torch.isfinite(value), f"{name} {kwargs}: value {value}"
    assert torch.isfinite(grad).all(), f"{name} {kwargs}: non-finite gradient"


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_padded_vocabulary_equals_unpadded(config):
    """-inf entries in both models are excluded: the result is that of the vocabulary without them
    (for U weights: uniform over the real entries)."""
    name, kwargs = config
    student, teacher, labels = make_batch(seed=15, dtype=torch.float32)
    padded_student, padded_teacher = padded(student, teacher, pad=3)
    value, grad = library(name, padded_student, padded_teacher, labels, **kwargs)
    ref_value, ref_grad = reference(name, student, teacher, labels, **kwargs)
    assert_rel_close(value, ref_value, what="padded value")
    assert_rel_close(grad[..., : student.shape[-1]], ref_grad, what="padded gradient")
    assert torch.all(grad[..., student.shape[-1]:] == 0), "padded columns must get zero gradient"


# ----------------------------------------------------------------------------------------------
# Fused linear + loss (chunked over tokens) == logits then loss
# ----------------------------------------------------------------------------------------------

FUSED_CONFIGS = [
    ("csd", {"weighting": "SS"}),
    ("csd", {"weighting": "SS", "temperature": 1.5}),
    ("csd", {"weighting": "TS"}),
    ("csd", {"weighting": "MM"}),
    ("fkl", {}),
    ("rkl", {}),
    ("dld", {}),
    ("dld", {"weight": "T", "normalize": "std"}),
]


def make_hidden(dtype, seed=16, tokens=13, student_dim=6, teacher_dim=5, vocab=17):
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    student_hidden = randn(tokens, student_dim)
    student_weight = randn(vocab, student_dim) * 3.0 / math.sqrt(student_dim)
    teacher_hidden = randn(tokens, teacher_dim)
    teacher_weight = randn(vocab, teacher_dim) * 3.0 / math.sqrt(teacher_dim)
    labels = torch.randint(0, vocab, (tokens,), generator=gen)
    labels[[2, 7, 8]] = IGNORE
    return [x.to(dtype) for x in (student_hidden, student_weight, teacher_hidden, teacher_weight)] + [labels]


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 13, 64])
@pytest.mark.parametrize("config", FUSED_CONFIGS, ids=config_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_fused_linear_loss_equals_unfused(config, chunk_size, dtype):
    name, kwargs = config
    student_hidden, student_weight, teacher_hidden, teacher_weight, labels = make_hidden(dtype)

    # Unfused: materialise the logits, then the library loss.
    hidden = student_hidden.clone().requires_grad_(True)
    weight = student_weight.clone().requires_grad_(True)
    student_logits = (hidden @ weight.T)[None]
    teacher_logits = (teacher_hidden @ teacher_weight.T)[None]
    unfused = get_loss(name, **kwargs)(student_logits, teacher_logits, labels[None])
    unfused.backward()

    fused_hidden = student_hidden.clone().requires_grad_(True)
    fused_weight = student_weight.clone().requires_grad_(True)
    fused = fused_linear_loss(
        name, fused_hidden, fused_weight, teacher_hidden, teacher_weight, labels, chunk_size=chunk_size, **kwargs
    )
    fused.backward()

    assert_rel_close(fused, unfused, what="fused value")
    assert_rel_close(fused_hidden.grad, hidden.grad, what="fused hidden gradient")
    assert_rel_close(fused_weight.grad, weight.grad, what="fused head-weight gradient")

    # And both agree with the independent float64 reference.
    ref_value, _ = reference(name, student_logits.detach(), teacher_logits.detach(), labels[None], **kwargs)
    assert_rel_close(fused, ref_value, what="fused value vs reference")


@pytest.mark.parametrize("config", [("csd", {"weighting": "SS"}), ("fkl", {})], ids=config_id)
def test_fused_reduction_sum(config):
    name, kwargs = config
    student_hidden, student_weight, teacher_hidden, teacher_weight, labels = make_hidden(torch.float64)
    fused = fused_linear_loss(name, student_hidden, student_weight, teacher_hidden, teacher_weight, labels,
                              chunk_size=4, reduction="sum", **kwargs)
    ref_value, _ = reference(name, (student_hidden @ student_weight.T)[None], (teacher_hidden @ teacher_weight.T)[None],
                             labels[None], reduction="sum", **kwargs)
    assert_rel_close(fused, ref_value, what="fused sum")


@pytest.mark.parametrize("config", [("csd", {"weighting": "SS"}), ("csd", {"weighting": "TS"}), ("fkl", {})], ids=config_id)
def test_fused_bfloat16_is_close_to_float64(config):
    name, kwargs = config
    student_hidden, student_weight, teacher_hidden, teacher_weight, labels = make_hidden(torch.bfloat16)
    hidden = student_hidden.clone().requires_grad_(True)
    weight = student_weight.clone().requires_grad_(True)
    fused_linear_loss(name, hidden, weight, teacher_hidden, teacher_weight, labels, chunk_size=5, **kwargs).backward()
    assert hidden.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.bfloat16

    ref_hidden = student_hidden.double().requires_grad_(True)
    ref_weight = student_weight.double().requires_grad_(True)
    t = teacher_hidden.double() @ teacher_weight.double().T
    s = ref_hidden @ ref_weight.T
    keep = labels != IGNORE
    ref_rows(name, s[keep], t[keep], **kwargs).mean().backward()
    assert_rel_close(hidden.grad.float(), ref_hidden.grad, rtol=2e-2, what="bf16 fused hidden gradient")
    assert_rel_close(weight.grad.float(), ref_weight.grad, rtol=2e-2, what="bf16 fused weight gradient")


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "student_shape, teacher_shape",
    [((2, 3, 7), (2, 3, 8)), ((2, 3, 7), (2, 4, 7))],
)
def test_mismatched_logit_shapes_raise_with_both_shapes(student_shape, teacher_shape):
    student, teacher = torch.randn(student_shape), torch.randn(teacher_shape)
    labels = torch.zeros(student_shape[:-1], dtype=torch.long)
    with pytest.raises(ValueError) as info:
        get_loss("csd")(student, teacher, labels)
    assert str(student_shape) in str(info.value) and str(teacher_shape) in str(info.value), str(info.value)


def test_mismatched_label_shape_raises_with_both_shapes():
    student, teacher = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    labels = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError) as info:
        get_loss("fkl")(student, teacher, labels)
    assert "(2, 3, 7)" in str(info.value) and "(2, 4)" in str(info.value), str(info.value)


def test_fused_mismatched_vocabulary_raises():
    student_hidden, student_weight = torch.randn(5, 4), torch.randn(7, 4)
    teacher_hidden, teacher_weight = torch.randn(5, 3), torch.randn(8, 3)
    with pytest.raises(ValueError):
        fused_linear_loss("csd", student_hidden, student_weight, teacher_hidden, teacher_weight, torch.zeros(5, dtype=torch.long))


def test_unknown_loss_name_lists_known_names():
    with pytest.raises((KeyError, ValueError)) as info:
        get_loss("not_a_loss")
    message = str(info.value)
    assert "csd" in message and "fkl" in message, message


@pytest.mark.parametrize("weighting", ["XS", "S", "SSS", "sx"])
def test_bad_weighting_letters_raise(weighting):
    student, teacher, labels = make_batch()
    with pytest.raises(ValueError) as info:
        get_loss("csd", weighting=weighting)(student, teacher, labels)
    message = str(info.value)
    assert all(letter in message for letter in "USTM"), message


def test_unknown_option_raises():
    with pytest.raises((TypeError, ValueError)):
        get_loss("csd", weighing="SS")


# ----------------------------------------------------------------------------------------------
# Autograd plumbing: the loss is used inside larger expressions and under no_grad
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [("csd", {"weighting": "TS"}), ("fkl", {}), ("dld", {"normalize": "std"})], ids=config_id)
def test_gradient_of_scaled_loss_inside_a_larger_expression(config):
    """d(0.3 * L + L_other)/ds must be 0.3 * dL/ds: the upstream gradient has to be honoured."""
    name, kwargs = config
    student, teacher, labels = make_batch(seed=17)
    s = student.clone().requires_grad_(True)
    (0.3 * get_loss(name, **kwargs)(s, teacher, labels) + (s**2).sum()).backward()
    _, ref_grad = reference(name, student, teacher, labels, **kwargs)
    assert_rel_close(s.grad - 2 * student, 0.3 * ref_grad, what="scaled gradient")


@pytest.mark.parametrize("config", [("csd", {"weighting": "SS"}), ("csd", {"weighting": "MS"}), ("js", {}),
                                    ("dld", {"weight": "T", "normalize": "range"})], ids=config_id)
def test_value_under_no_grad_matches_reference(config):
    name, kwargs = config
    student, teacher, labels = make_batch(seed=18)
    with torch.no_grad():
        value = get_loss(name, **kwargs)(student.clone().requires_grad_(True), teacher, labels)
    ref_value, _ = reference(name, student, teacher, labels, **kwargs)
    assert_rel_close(value, ref_value, what="no_grad value")


def test_non_leaf_student_logits_get_gradient_through_the_graph():
    """Logits produced by a layer: the gradient must reach the layer's parameters."""
    gen = torch.Generator().manual_seed(19)
    hidden = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64)
    head = (torch.randn(23, 6, generator=gen, dtype=torch.float64) * 1.2).requires_grad_(True)
    _, teacher, labels = make_batch(seed=19)
    get_loss("csd")(hidden @ head.T, teacher, labels).backward()
    _, ref_logit_grad = reference("csd", (hidden @ head.T).detach(), teacher, labels)
    expected = torch.einsum("btv,bth->vh", ref_logit_grad, hidden)
    assert_rel_close(head.grad, expected, what="head gradient")


@pytest.mark.parametrize("name", ["csd", "fkl"])
def test_half_precision_teacher_with_float32_student(name):
    """The authors run the teacher in fp16: mixed dtypes must work (teacher upcast)."""
    student, teacher, labels = make_batch(seed=20, dtype=torch.float32)
    teacher = teacher.half()
    value, grad = library(name, student, teacher, labels)
    ref_value, ref_grad = reference(name, student, teacher, labels)
    assert grad.dtype == torch.float32
    assert_rel_close(value, ref_value, what="mixed-dtype value")
    assert_rel_close(grad, ref_grad, what="mixed-dtype gradient")


@pytest.mark.parametrize("name", ["csd", "fkl", "dld"])
def test_nan_student_logit_is_not_treated_as_padding(name):
    """Only -inf marks padding; a NaN from a diverging student must surface, not be silently dropped."""
    student = torch.randn(1, 2, 5)
    student[0, 0, 1] = float("nan")
    loss = get_loss(name)(student, torch.randn(1, 2, 5), torch.zeros(1, 2, dtype=torch.long))
    assert torch.isnan(loss)
