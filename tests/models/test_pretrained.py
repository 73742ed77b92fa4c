import json
import os
import pickle

import pytest
import torch
from torchvision import models as tvm

from mnist_bench.cli import main
from mnist_bench.models import AlexNetClassifier, VGG16Classifier
from mnist_bench.models.components.pretrained import WeightsError, imagenet_weights_path

from ..conftest import ROOT


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def plant(arch: str, full: bool) -> dict[str, torch.Tensor]:
    """A state dict of torchvision's shapes with recognisable random values, saved where torch.hub caches
    it."""
    torch.manual_seed(123)
    build = {"vgg16": tvm.vgg16, "alexnet": tvm.alexnet}[arch]
    state = build(weights=None).state_dict()
    if not full:  # our loader reads the features only; skip VGG16's 120M-parameter ImageNet head to stay fast
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    state = {k: torch.randn_like(v) for k, v in state.items()}
    path = imagenet_weights_path(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


@pytest.mark.parametrize(
    "cls, arch, size, full",
    [(VGG16Classifier, "vgg16", 32, False), (AlexNetClassifier, "alexnet", 63, True)],
    ids=["vgg16", "alexnet"],
)
def test_planted_imagenet_weights_load_with_a_summed_stem(torch_home, cls, arch, size, full):
    state = plant(arch, full)
    assert imagenet_weights_path(arch).parent == torch_home / "hub" / "checkpoints"
    model = cls(weights="imagenet", image_size=size)
    assert model.pretrained is True
    stem = model.net.features[0].weight
    assert stem.shape[1] == 1
    torch.testing.assert_close(stem, state["features.0.weight"].sum(dim=1, keepdim=True))
    deeper = next(
        k for k in state if k.startswith("features.") and k.endswith("weight") and k != "features.0.weight"
    )
    torch.testing.assert_close(model.net.state_dict()[deeper], state[deeper])
    assert model.net.head[-1].out_features == 10
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    "arch, filename", [("vgg16", "vgg16-397923af.pth"), ("alexnet", "alexnet-owt-7be5be79.pth")]
)
def test_imagenet_without_the_file_names_it(torch_home, arch, filename):
    cls = {"vgg16": VGG16Classifier, "alexnet": AlexNetClassifier}[arch]
    with pytest.raises(WeightsError) as err:
        cls(weights="imagenet", image_size=64)
    message = str(err.value)
    assert str(torch_home / "hub" / "checkpoints" / filename) in message
    assert "weights=none" in message and "download" in message


def test_auto_falls_back_loudly_and_records_it(torch_home, synthetic_data, tmp_path):
    with pytest.warns(UserWarning, match="TRAINING FROM SCRATCH"):
        model = AlexNetClassifier(weights="auto", image_size=63)
    assert model.pretrained is False and model.backbone_lr_scale == 1.0


def test_local_path_and_corrupt_or_malicious_files(torch_home, tmp_path):
    state = plant("alexnet", full=False)
    local = tmp_path / "mine.pth"
    os.replace(imagenet_weights_path("alexnet"), local)
    assert AlexNetClassifier(weights=str(local), image_size=63).pretrained is True

    broken = tmp_path / "broken.pth"
    broken.write_bytes(local.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="broken.pth"):
        AlexNetClassifier(weights=str(broken), image_size=63)

    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"features.0.weight": Payload()}, f)
    with pytest.raises(WeightsError, match="evil.pth"):
        AlexNetClassifier(weights=str(evil), image_size=63)
    assert not marker.exists()
    assert state  # planted file was real


def test_backbone_gets_the_lower_lr_only_when_pretrained(torch_home):
    from functools import partial

    plant("alexnet", full=False)
    opt = partial(torch.optim.AdamW, lr=1e-3)
    groups = AlexNetClassifier(
        weights="imagenet", image_size=63, optimizer=opt, backbone_lr_scale=0.1
    ).parameter_groups()
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(1e-4) and "lr" not in groups[1]
    scratch = AlexNetClassifier(weights="none", image_size=63, optimizer=opt).parameter_groups()
    assert scratch[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("config, size", [("vgg16", 32), ("alexnet", 63)])
def test_fast_dev_run_at_the_smallest_legal_size(config, size, tiny_fit_args, tmp_path, torch_home):
    main(
        [
            "fit",
            "--config",
            str(ROOT / f"configs/{config}.yaml"),
            "--trainer.fast_dev_run=true",
            f"--model.init_args.image_size={size}",
            "--model.init_args.weights=none",
            *tiny_fit_args,
        ]
    )
    (run,) = (tmp_path / "lightning_logs" / config).glob("version_*")
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "ok" and m["pretrained"] is False and m["image_size"] == size


def test_freeze_then_unfreeze(torch_home, synthetic_data):
    from lightning.pytorch import Trainer

    from mnist_bench.data.datamodule import MNISTDataModule

    plant("alexnet", full=False)
    model = AlexNetClassifier(weights="imagenet", image_size=63, freeze_backbone_epochs=1)
    before = model.net.features[0].weight.detach().clone()
    seen = []

    from lightning.pytorch.callbacks import Callback

    class Watch(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append(all(p.requires_grad for p in pl_module.net.features.parameters()))

    trainer = Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Watch()],
    )
    trainer.fit(model, MNISTDataModule(str(synthetic_data), val_size=100, batch_size=16))
    assert seen == [False, True]
    assert not torch.equal(before, model.net.features[0].weight)


def test_too_small_image_is_a_config_error(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_bench",
            "fit",
            "--config",
            str(ROOT / "configs/alexnet.yaml"),
            "--model.init_args.image_size=32",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "image_size" in proc.stderr and "63" in proc.stderr


# --- download into torch.hub's cache, from a throwaway server on 127.0.0.1
# -------------------------------------------
@pytest.fixture
def weights_server(tmp_path, monkeypatch):
    """Serves tmp_path/served over HTTP on 127.0.0.1 and points the weights URL at it; yields the folder."""
    import functools
    import http.server
    import threading

    from mnist_bench.models.components import pretrained

    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(pretrained.WEIGHTS_URL_VARIABLE, f"http://127.0.0.1:{server.server_port}/models")
    (served / "models").mkdir()
    yield served / "models"
    server.shutdown()
    server.server_close()


def serve_alexnet(folder) -> tuple[dict[str, torch.Tensor], str]:
    """AlexNet's features with random values, under torchvision's file name; returns them and their sha256."""
    import hashlib

    torch.manual_seed(7)
    state = {k: torch.randn_like(v) for k, v in tvm.alexnet(weights=None).features.state_dict().items()}
    path = folder / "alexnet-owt-7be5be79.pth"
    torch.save({f"features.{k}": v for k, v in state.items()}, path)
    return state, hashlib.sha256(path.read_bytes()).hexdigest()


def test_auto_downloads_the_weights_into_the_cache_with_the_hash_check(
    torch_home, weights_server, monkeypatch
):
    from mnist_bench.models.components import pretrained

    state, sha = serve_alexnet(weights_server)
    # torchvision's file names carry the first hex digits of the real file's sha256; the planted file has its
    # own
    monkeypatch.setattr(pretrained, "expected_hash_prefix", lambda path: sha[:8])
    model = AlexNetClassifier(weights="auto", image_size=64)
    assert model.pretrained is True
    cached = imagenet_weights_path("alexnet")
    assert cached.is_file() and cached.read_bytes() == (weights_server / cached.name).read_bytes()
    torch.testing.assert_close(model.net.features[0].weight, state["0.weight"].sum(dim=1, keepdim=True))
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no partial file left


@pytest.mark.parametrize("weights", ["auto", "imagenet"])
def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(torch_home, weights_server, weights):
    serve_alexnet(weights_server)  # its sha256 does not start with 7be5be79
    with pytest.raises(WeightsError, match="sha256 .* does not start with 7be5be79"):
        AlexNetClassifier(weights=weights, image_size=64)
    cached = imagenet_weights_path("alexnet")
    assert not cached.exists() and not list(cached.parent.iterdir())


def test_offline_auto_trains_from_scratch_and_imagenet_stops(torch_home):
    # conftest points the URL at a closed port on 127.0.0.1: the connection is refused at once
    with pytest.warns(UserWarning, match="download failed .*TRAINING FROM SCRATCH"):
        model = AlexNetClassifier(weights="auto", image_size=64)
    assert model.pretrained is False
    with pytest.raises(WeightsError) as err:
        AlexNetClassifier(weights="imagenet", image_size=64)
    message = str(err.value)
    assert "refused" in message.lower() and "127.0.0.1:9/models/alexnet-owt-7be5be79.pth" in message
    assert "\n" not in message and not imagenet_weights_path("alexnet").exists()


def test_a_server_that_never_answers_times_out(torch_home, monkeypatch):
    import socket

    from mnist_bench.models.components import pretrained

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection (in the backlog) and never sends a byte
    monkeypatch.setenv(pretrained.WEIGHTS_URL_VARIABLE, f"http://127.0.0.1:{silent.getsockname()[1]}/m")
    monkeypatch.setattr(pretrained, "CONNECT_TIMEOUT_S", 0.5)
    try:
        with pytest.raises(WeightsError, match="timed out"):
            AlexNetClassifier(weights="imagenet", image_size=64)
    finally:
        silent.close()
