import pytest
import timm
import torch
from torch import nn

from mnist_bench.errors import ConfigError
from mnist_bench.models import ViT
from mnist_bench.models.components.vit import Attention, VisionTransformer


@pytest.mark.parametrize("patch, dim, depth, heads, ratio", [(4, 128, 6, 4, 2.0), (7, 192, 4, 6, 4.0)])
def test_same_architecture_as_timm(patch, dim, depth, heads, ratio):
    ours = VisionTransformer(28, patch, 1, 10, dim, depth, heads, ratio)
    ref = timm.models.VisionTransformer(
        img_size=28,
        patch_size=patch,
        in_chans=1,
        num_classes=10,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=ratio,
        global_pool="token",
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(ref)
    x = torch.randn(3, 1, 28, 28)
    assert ours(x).shape == ref(x).shape == (3, 10)
    # same names and shapes too: timm's weights load into ours, and then both compute the same function
    missing = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing.missing_keys
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-4)


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    dim, heads = 64, 4
    ours = Attention(dim, heads).eval()
    ref = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(5, 17, dim)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-4)


def test_weight_decay_only_on_weights():
    model = ViT(patch_size=7, dim=64, depth=2, num_heads=2)
    decay, no_decay = model.parameter_groups()
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert all(p.ndim >= 2 for p in decay["params"])
    ids = {id(p) for p in no_decay["params"]}
    assert id(model.net.pos_embed) in ids and id(model.net.cls_token) in ids
    assert id(model.net.patch_embed.proj.weight) not in ids
    total = len(decay["params"]) + len(no_decay["params"])
    assert total == len(list(model.net.parameters()))


def test_bad_patch_size_is_a_config_error():
    with pytest.raises(ConfigError, match="patch_size=5 does not divide"):
        ViT(patch_size=5)


def test_drop_path_is_off_in_eval_and_random_in_train():
    torch.manual_seed(0)
    model = VisionTransformer(28, 7, 1, 10, 32, 2, 2, 2.0, drop_path=0.5)
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))
