"""csd.config.validate at its boundaries, and train.best_metric: every metric validation reports, the direction
best/ follows for each (written out here by hand), and an unknown name refused before anything loads."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from csd.config import BEST_METRICS, CONFIG_DIR, compose, higher_is_better, validate

# Which way each metric improves, by its meaning: losses (nats per token) down, scores of responses (%) up.
DIRECTION = {"val/loss": "lower", "val/ce": "lower", "val/kd": "lower",
             "val/rougeL": "higher", "val/rouge1": "higher", "val/rouge2": "higher", "val/rougeLsum": "higher",
             "val/exact_match": "higher", "val/bleu": "higher", "val/accuracy": "higher", "val/accuracy_strict": "higher"}


def config(*overrides: str):
    """A trainer config that validate can check without any model or data on disk."""
    return compose(["model=tiny", "model.teacher.name_or_path=no/such-teacher", "model.student.name_or_path=no/such-student",
                    "data=tiny", "train.batch_size=4", "train.max_length=96", "train.max_prompt_length=48", *overrides])


def test_every_metric_has_its_direction():
    assert sorted(BEST_METRICS) == sorted(DIRECTION)
    assert {m: "higher" if higher_is_better(m) else "lower" for m in BEST_METRICS} == DIRECTION


def test_best_metrics_are_the_metrics_validation_reports(train_config):
    """val/* of the validation loss (with an objective) and of every metric a data set can name (csd.metrics)."""
    from accelerate import Accelerator

    from csd.data import TrainCollator, build_dataset, pad_token_id_of
    from csd.losses import get_loss
    from csd.metrics import METRICS, compute_metric
    from csd.models import build_models
    from csd.step import validation_loss

    cfg = train_config("loss=fkl", "train.eval_batches=1")
    models = build_models(cfg)
    val_set = build_dataset(cfg.data, "validation", models.tokenizer, cfg.train.max_length, cfg.train.max_prompt_length)
    reported = set(validation_loss(models.student, models, get_loss("fkl"), val_set,
                                   TrainCollator(pad_token_id_of(models.tokenizer)), cfg, Accelerator(cpu=True)))
    example = {"references": ["4 apples"], "answer": "4", "response": "#### 4"}
    for metric in METRICS:
        reported |= {f"val/{key}" for key in compute_metric(metric, ["4 apples"], [example])}
    assert reported == set(BEST_METRICS)


@pytest.mark.parametrize("metric", sorted(DIRECTION))
def test_keep_if_best_keeps_the_best_evaluation_in_the_metric_direction(metric):
    """Evaluations 3, 1, 5, 2, 1, 5: best/ is written at evaluations 1 and 2 for a loss (ends at 1), 1 and 3 for a
    score (5); a tie with the best so far does not replace it."""
    from csd.distiller import Distiller, TrainState

    distiller = Distiller.__new__(Distiller)  # keep_if_best needs only the config and the state
    distiller.cfg, distiller.state = OmegaConf.create({"train": {"best_metric": metric}}), TrainState()
    saved = []
    distiller.save = lambda kind: saved.append((kind, evaluation))
    for evaluation, value in enumerate([3.0, 1.0, 5.0, 2.0, 1.0, 5.0], start=1):  # 5, 6: ties keep the earlier best/
        distiller.keep_if_best({name: (value if name == metric else -value) for name in DIRECTION})
    expected = (1.0, [1, 2]) if DIRECTION[metric] == "lower" else (5.0, [1, 3])
    assert (distiller.state.best_value, [e for _, e in saved]) == expected
    assert {kind for kind, _ in saved} == {"best"}


@pytest.mark.parametrize("every, step, end_of_epoch, due", [
    (None, 4, True, False), ("epoch", 4, False, False), ("epoch", 3, True, True), (2, 4, False, True), (2, 3, True, False)])
def test_evaluation_and_checkpoint_steps(every, step, end_of_epoch, due):
    """train.eval_every / save_every: null never, 'epoch' at each epoch's end, N at multiples of N."""
    from csd.distiller import is_due

    assert is_due(every, step, end_of_epoch) is due


def test_unknown_best_metric_is_refused_in_one_line():
    with pytest.raises(ValueError) as error:
        validate(config("train.best_metric=val/rougel"))
    message = str(error.value)
    assert "\n" not in message
    assert message == ("train.best_metric='val/rougel' is not allowed; choose one of: " + ", ".join(BEST_METRICS))
    with pytest.raises(ValueError) as direct:  # higher_is_better asked directly (keep_if_best) says the same
        higher_is_better("val/rougel")
    assert str(direct.value) == message


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_preset_passes_validation(preset):
    """Includes its train.best_metric being one validation reports, with eval_generate set for a score."""
    validate(compose([f"experiment={preset}"]))


# (overrides, None = accepted | the start of the error message). Each boundary from both sides.
BOUNDARIES = [
    (["train.max_prompt_length=95"], None),  # one token left for the response
    (["train.max_prompt_length=96"], "train.max_prompt_length=96 must be below train.max_length=96"),
    (["train.max_prompt_length=97"], "train.max_prompt_length=97 must be below train.max_length=96"),
    (["train.kd_ratio=0.0"], None),
    (["train.kd_ratio=1.0"], None),
    (["train.kd_ratio=-0.01"], "train.kd_ratio=-0.01 must lie in [0, 1]"),
    (["train.kd_ratio=1.01"], "train.kd_ratio=1.01 must lie in [0, 1]"),
    (["train.keep_checkpoints=1"], None),
    (["train.keep_checkpoints=0"], "train.keep_checkpoints=0 must be at least 1"),
    (["train.eval_every=1", "train.save_every=1"], None),
    (["train.eval_every=0"], "train.eval_every=0 must be 'epoch', a positive number"),
    (["train.save_every=0"], "train.save_every=0 must be 'epoch', a positive number"),
    (["optim.scheduler=null"], "optim.scheduler=None is not allowed; choose one of: constant, linear, cosine"),
    (["loss.reduction=mean"], "loss.reduction='mean' is not allowed; choose one of: token, sequence"),
    (["loss.reduction=null"], None),  # optional: the token mean
    (["train.max_steps=1"], None),
    (["train.max_steps=0"], "train.max_steps=0 must be a positive number"),
    (["train.batch_size=1", "train.grad_accum=1", "train.epochs=1"], None),
    (["train.batch_size=0"], "train.batch_size=0 must be a positive number"),
    (["train.grad_accum=0"], "train.grad_accum=0 must be a positive number"),
    (["optim.lr=0"], "optim.lr=0 must be a positive number"),
    (["batches=imitkd", "batches.buffer_capacity=4"], None),  # exactly one micro-batch
    (["batches=imitkd", "batches.buffer_capacity=3"], "batches.buffer_capacity=3 must hold at least one micro-batch"),
    (["batches=imitkd", "batches.mixed_alpha=0.0"], None),
    (["batches=imitkd", "batches.mixed_alpha=1.0"], None),
    (["batches=imitkd", "batches.mixed_alpha=1.01"], "batches.mixed_alpha=1.01 must be a probability in [0, 1]"),
    (["batches=gkd", "batches.student_ratio=-0.01"], "batches.student_ratio=-0.01 must be a probability in [0, 1]"),
    (["batches=gkd", "batches.student_ratio=true"], "batches.student_ratio=True must be a probability in [0, 1]"),
    (["batches=gkd", "batches.student_ratio=half"], "batches.student_ratio='half' must be a probability in [0, 1]"),
    (["batches=chat_pairs"],
     "batches=chat_pairs needs teacher/student response pairs (data=chat_pairs), not data='tiny' (format 'minillm')"),
    (["batches=chat_pairs", "data=chat_pairs"], None),
    (["train.best_metric=val/ce"], None),
    (["train.best_metric=val/bleu"], "train.best_metric=val/bleu comes from generated responses"),
    (["train.best_metric=val/bleu", "train.eval_generate=1"], None),
]


@pytest.mark.parametrize("overrides, error", BOUNDARIES, ids=[" ".join(o) for o, _ in BOUNDARIES])
def test_validate_boundaries(overrides, error):
    cfg = config(*overrides)
    if error is None:
        validate(cfg)
    else:
        with pytest.raises(ValueError) as raised:
            validate(cfg)
        assert str(raised.value).startswith(error)


def test_resume_must_be_an_existing_directory(tmp_path: Path):
    validate(config(f"train.resume={tmp_path}"))
    validate(config("train.resume=auto"))
    with pytest.raises(ValueError, match="train.resume=.* must be null, 'auto' or an existing checkpoint directory"):
        validate(config(f"train.resume={tmp_path / 'missing'}"))


@pytest.mark.parametrize("loss, kd_ratio, enabled", [("csd", 0.3, True), ("csd", 0.0, False), ("sft", 1.0, False)])
def test_distillation_runs_only_for_an_objective_with_a_positive_kd_ratio(loss, kd_ratio, enabled):
    """No teacher forward (and no train/kd) for loss=sft, nor for an objective weighted 0 (plain CE)."""
    from csd.config import distillation_enabled

    assert distillation_enabled(config(f"loss={loss}", f"train.kd_ratio={kd_ratio}")) is enabled


def test_a_missing_corpus_config_is_refused_by_validate():
    """train.lm_data names a data config: a missing one fails in validate, before any model loads."""
    with pytest.raises(FileNotFoundError, match="no data config"):
        validate(config("train.lm_data=no_such_corpus"))
