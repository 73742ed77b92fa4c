import time

import pytest
import torch
from lightning.pytorch import Trainer

from mnist_bench.callbacks.timing import TimingCallback
from mnist_bench.data.datamodule import MNISTDataModule
from mnist_bench.models import CNN, WarmupCosineLR
from mnist_bench.models.components.adapter import InputAdapter


def test_input_adapter_resizes_and_repeats_channels():
    x = torch.randn(4, 1, 28, 28)
    assert InputAdapter(28, 1)(x) is x
    out = InputAdapter(64, 3)(x)
    assert out.shape == (4, 3, 64, 64)
    torch.testing.assert_close(out[:, 0], out[:, 2])


def test_cnn_logits_shape_and_parameter_count():
    model = CNN()
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert model.num_parameters() == 421_866


def test_warmup_cosine_shape():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosineLR(opt, total_steps=100, warmup_pct=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_scheduler_gets_total_steps_from_the_trainer(synthetic_data):
    from functools import partial

    model = CNN(
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1e-3),
    )
    dm = MNISTDataModule(str(synthetic_data), val_size=100, batch_size=100)
    trainer = Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.total_steps == 10  # 2 epochs x 500 images / batch 100
    assert trainer.lr_scheduler_configs[0].interval == "step"


class SlowValidationCNN(CNN):
    def training_step(self, batch, batch_idx):
        time.sleep(0.04)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        time.sleep(0.3)
        return super().validation_step(batch, batch_idx)


def test_train_time_excludes_validation_and_survives_a_state_round_trip(synthetic_data):
    timing = TimingCallback()
    dm = MNISTDataModule(str(synthetic_data), val_size=100, batch_size=100, eval_batch_size=100)
    trainer = Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timing],
        num_sanity_val_steps=0,
    )
    trainer.fit(SlowValidationCNN(), dm)
    summary = timing.summary()
    # 2 validation passes of 0.3 s each are inside fit but not inside train
    assert summary["time/fit_s"] - summary["time/train_s"] >= 0.6
    # each epoch's 5 training steps sleep 0.2 s in all: the epoch clocks hold them and add up to the
    # training-loop clock, which holds no validation (above). No upper bound in seconds: a loaded machine is
    # slower.
    assert len(timing.epoch_s) == 2 and all(s >= 0.2 for s in timing.epoch_s), timing.epoch_s
    assert sum(timing.epoch_s) == pytest.approx(summary["time/train_s"], abs=1e-3), (timing.epoch_s, summary)
    assert timing.train_images == 1000
    resumed = TimingCallback()
    resumed.load_state_dict(timing.state_dict())
    assert resumed.train_s == pytest.approx(timing.train_s) and resumed.train_images == 1000


class PoisonedCNN(CNN):
    """Its loss turns NaN from the 3rd optimizer step on (a test-only divergence)."""

    def loss(self, logits, y, stage):
        loss = super().loss(logits, y, stage)
        return loss * float("nan") if stage == "train" and self.global_step >= 2 else loss


def test_nan_loss_stops_the_run_naming_epoch_and_step(synthetic_data, tmp_path):
    from mnist_bench.models.base import DivergenceError

    dm = MNISTDataModule(str(synthetic_data), val_size=100, batch_size=50)
    trainer = Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(DivergenceError, match="epoch 0, step 2"):
        trainer.fit(PoisonedCNN(), dm)


def test_epoch_loss_is_weighted_by_batch_size():
    model = CNN()
    model._update_loss("test", torch.tensor(1.0), 3)
    model._update_loss("test", torch.tensor(2.0), 1)
    assert float(model.mean_loss["test_loss"].compute()) == pytest.approx(1.25)


def test_training_loss_window_weights_by_batch_size_and_finds_the_first_bad_step():
    from mnist_bench.models.training_loss import TrainingLossWindow

    window = TrainingLossWindow(size=3)
    for step, (loss, n) in enumerate([(1.0, 4), (2.0, 4), (4.0, 2), (0.5, 6)]):
        window.add(torch.tensor(loss), n, step)
        if window.full:
            assert int(window.fold()) == -1
    assert not window.full
    assert float(window.mean()) == pytest.approx((4 + 8 + 8 + 3) / 16)
    window.reset()
    assert float(window.mean()) == 0.0
    found = []
    for step, loss in enumerate([1.0, 1.0, 1.0, 1.0, float("inf"), float("nan"), 1.0], start=100):
        window.add(torch.tensor(loss), 10, step)
        if window.full:
            found.append(int(window.fold()))
    found.append(int(window.fold()))  # the part-filled last window (step 106)
    assert found == [-1, 104, -1]  # steps 100-102 clean; inf at 104 comes before the NaN at 105


def test_training_loss_window_reports_the_optimizer_step_under_gradient_accumulation():
    """With accumulate_grad_batches=4, four batches share an optimizer step: slot 6 is step 101, not 100 +
    6."""
    from mnist_bench.models.training_loss import TrainingLossWindow

    window = TrainingLossWindow(size=8)
    for batch in range(8):
        loss = float("nan") if batch == 6 else 1.0
        window.add(torch.tensor(loss), 10, 100 + batch // 4)
    assert int(window.fold()) == 101


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that records the ``fused`` it was asked for (a fused AdamW needs a GPU to be built here)."""

    def __init__(self, params, lr=1e-3, foreach=None, fused=None, differentiable=False):
        self.fused_asked = fused
        super().__init__(params, lr=lr, foreach=foreach, differentiable=differentiable)


@pytest.mark.parametrize(
    ("device", "given", "fused"),
    [
        ("cuda", {}, True),  # the fused kernel by default on a GPU
        ("cuda", {"fused": False}, False),  # the config's choice wins
        ("cuda", {"foreach": True}, None),  # fused and foreach cannot both be set
        ("cpu", {}, None),  # the CPU keeps the recipe it was measured with
    ],
)
def test_adam_family_optimizers_use_their_fused_kernel_on_cuda_unless_the_config_says(device, given, fused):
    from functools import partial

    model = CNN(optimizer=partial(RecordingAdamW, lr=1e-3, **given))
    model._device = (
        torch.device(device, 0) if device == "cuda" else torch.device(device)
    )  # what the strategy's model_to_device sets; the weights may stay put
    optimizer = model.build_optimizer()
    assert isinstance(optimizer, RecordingAdamW)
    assert optimizer.fused_asked == fused


# --- the model contract
# -----------------------------------------------------------------------------------------------
def model_classes():
    import inspect

    import mnist_bench.models as models
    from mnist_bench.models.base import MNISTClassifier

    found = [getattr(models, name) for name in models.__all__]
    return [
        cls
        for cls in found
        if inspect.isclass(cls) and issubclass(cls, MNISTClassifier) and cls is not MNISTClassifier
    ]


@pytest.mark.parametrize("cls", model_classes(), ids=lambda cls: cls.__name__)
def test_every_model_class_meets_the_public_contract(cls, monkeypatch, tmp_path):
    """Built from its defaults, each model overrides no private base method and answers the public hooks the
    base, predict, export and the report use, with the shapes they rely on."""
    from mnist_bench.models.base import MNISTClassifier

    monkeypatch.setenv(
        "TORCH_HOME", str(tmp_path)
    )  # no ImageNet weights here: the pretrained models start random
    private = {name for name in dir(MNISTClassifier) if name.startswith("_") and not name.startswith("__")}
    for klass in cls.__mro__[: cls.__mro__.index(MNISTClassifier)]:
        overridden = sorted(name for name in vars(klass) if name in private)
        assert not overridden, f"{klass.__name__} overrides private base methods {overridden}"
    model = cls().eval()
    assert model.model_name not in ("", MNISTClassifier.model_name)
    x = torch.randn(4, 1, 28, 28)
    y = torch.tensor([0, 3, 7, 9])
    with torch.no_grad():
        for stage in ("val", "test"):
            out = model.step((x, y), stage)
            assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
            assert out["preds"].shape == (4,) and out["preds"].dtype == torch.int64
        assert out["scores"].shape == (4, 10) and bool((out["scores"] >= 0).all())
        scores = model.class_scores(x)
    assert scores.shape == (4, 10) and torch.equal(scores.argmax(1), out["preds"])
    assert model.attack_logits(x).shape == (4, 10)
    assert isinstance(model.extra_metrics(), dict) and isinstance(model.epoch_metrics("train"), dict)
    assert model.onnx_kind in ("classifier", "detector") and model.num_parameters() > 0
