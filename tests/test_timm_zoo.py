"""timm models at full rank: compress computes what the model did, and a saved and loaded
copy computes it bit for bit. Random weights (any all-zero tensor, such as a zero-initialised
head, drawn at random so that the outputs say something), small inputs where the model takes
them. The fast set holds models whose Conv2d/Linear subclasses once crashed `ht2.compress`;
the slow set (-m slow) one small model of every timm family.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import ht2

timm = pytest.importorskip("timm")

REL_TOL = 1e-3  # full rank: float rounding through a deep network
# Conv2dSame, timm's Linear, ScaledStdConv2d, StdConv2dSame (StdConv2d: test_subclasses).
PROBLEMS = [
    "tf_efficientnet_b0",
    "mobilenetv3_small_100",
    "ghostnet_100",
    "test_nfnet",
    "vit_tiny_r_s16_p8_224",
]
SLOW_PROBLEMS = ["nf_resnet26", "resnetv2_50x1_bit", "tf_mobilenetv3_small_minimal_100"]
# The smallest model by parameters of each timm family (module) in timm 1.0.x, found by
# building every model on the meta device; a family not listed (a newer timm) is tried with
# its first model by name.
SMALLEST = {
    "byoanet": "halonet_h1",
    "byobnet": "test_byobnet",
    "cait": "cait_xxs24_224",
    "coat": "coat_tiny",
    "convit": "convit_tiny",
    "convmixer": "convmixer_768_32",
    "convnext": "test_convnext",
    "cpubone": "cpubone_nano",
    "crossvit": "crossvit_tiny_240",
    "csatv2": "csatv2",
    "cspnet": "cs3darknet_focus_s",
    "cspnext": "cspnext_tiny",
    "davit": "davit_tiny",
    "deit": "deit_tiny_patch16_224",
    "densenet": "densenet121",
    "dla": "dla46x_c",
    "dpn": "dpn48b",
    "edgenext": "edgenext_xx_small",
    "efficientformer": "efficientformer_l1",
    "efficientformer_v2": "efficientformerv2_s0",
    "efficientnet": "test_efficientnet",
    "efficientvim": "efficientvim_m1",
    "efficientvit_mit": "efficientvit_b0",
    "efficientvit_msra": "efficientvit_m0",
    "eva": "vit_tiny_patch16_dinov3_qkvb",
    "fasternet": "fasternet_t0",
    "fastvit": "fastvit_t8",
    "focalnet": "focalnet_tiny_srf",
    "gcvit": "gcvit_xxtiny",
    "ghostnet": "ghostnet_050",
    "hardcorenas": "hardcorenas_b",
    "hgnet": "hgnetv2_b0",
    "hiera": "hiera_tiny_224",
    "hieradet_sam2": "sam2_hiera_tiny",
    "hrnet": "hrnet_w18_small",
    "iformer": "iformer_t",
    "inception_next": "inception_next_atto",
    "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3",
    "inception_v4": "inception_v4",
    "lcnetv2": "lcnetv2_small",
    "levit": "levit_128s",
    "lowformer": "lowformer_b0",
    "mambaout": "test_mambaout",
    "maxxvit": "test_coatnet",
    "metaformer": "poolformerv2_s12",
    "mlp_mixer": "gmlp_ti16_224",
    "mobilenetv3": "mobilenetv3_small_050",
    "mobilevit": "mobilevit_xxs",
    "mvitv2": "mvitv2_tiny",
    "nest": "nest_tiny",
    "nextvit": "nextvit_small",
    "nfnet": "test_nfnet",
    "pit": "pit_ti_224",
    "pvt_v2": "pvt_v2_b0",
    "rdnet": "rdnet_tiny",
    "regnet": "regnetx_002",
    "repghost": "repghostnet_050",
    "repvit": "repvit_m1",
    "res2net": "res2next50",
    "resnest": "resnest14d",
    "resnet": "test_resnet",
    "resnetv2": "resnetv2_18",
    "rexnet": "rexnet_100",
    "selecsls": "selecsls42",
    "senet": "legacy_seresnet18",
    "sequencer": "sequencer2d_s",
    "shvit": "shvit_s1",
    "sknet": "skresnet18",
    "starnet": "starnet_s050",
    "swiftformer": "swiftformer_xs",
    "swin_transformer": "swin_tiny_patch4_window7_224",
    "swin_transformer_v2": "swinv2_tiny_window8_256",
    "swin_transformer_v2_cr": "swinv2_cr_tiny_224",
    "tiny_vit": "tiny_vit_5m_224",
    "tnt": "tnt_s_legacy_patch16_224",
    "tresnet": "tresnet_m",
    "twins": "twins_svt_small",
    "visformer": "visformer_tiny",
    "vision_transformer": "test_vit",
    "vision_transformer_hybrid": "vit_tiny_r_s16_p8_224",
    "vision_transformer_relpos": "test_vit_relpos",
    "vitamin": "vitamin_small_224",
    "volo": "volo_d1_224",
    "vovnet": "ese_vovnet19b_slim_dw",
    "xception": "legacy_xception",
    "xception_aligned": "xception41p",
    "xcit": "xcit_nano_12_p8_224",
}
# Families whose smallest model holds over 60 M parameters: too slow to decompose in a test.
LARGE = {
    "beit",
    "deepseek_vit",
    "gemma4_vit",
    "mobilenetv5",
    "naflexvit",
    "nasnet",
    "pnasnet",
    "qwen3_vit",
    "vgg",
    "vision_transformer_sam",
}


def family_models() -> list[str]:
    """One model per timm family, in family order."""
    chosen = []
    for family in timm.list_modules():
        names = timm.list_models(module=family)
        if family in LARGE or not names:
            continue
        chosen.append(SMALLEST[family] if SMALLEST.get(family) in names else names[0])
    return chosen


def _build(name: str, seed: int, kwargs: dict) -> nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():
        for tensor in model.parameters():
            if tensor.numel() and not tensor.any():
                tensor.normal_(0.0, 0.02)
    return model


def _model_and_input(name: str) -> tuple[nn.Module, torch.Tensor, dict]:
    """The model at 64 px where it takes that (asked for, or as built), else at its own size."""
    default = timm.models.get_pretrained_cfg(name)
    sizes = [({"img_size": 64}, 64), ({}, 64), ({}, default.input_size[-1] if default else 224)]
    failure: Exception | None = None
    for kwargs, size in sizes:
        try:
            model = _build(name, 0, kwargs)
            x = torch.randn(2, 3, size, size)
            with torch.no_grad():
                model(x)
            return model, x, kwargs
        except Exception as error:  # this size or keyword does not suit the model: next
            failure = error
    raise AssertionError(f"{name} runs at no input size tried: {failure}")


def _check_full_rank_and_round_trip(name: str, folder: Path) -> ht2.CompressionReport:
    model, x, kwargs = _model_and_input(name)
    with torch.no_grad():
        expected = model(x)
    report = ht2.compress(model, energy=1.0, keep_if_larger=False)
    with torch.no_grad():
        actual = model(x)
    error = torch.linalg.norm(actual - expected) / torch.linalg.norm(expected)
    assert error < REL_TOL, f"{name}: relative output error {float(error):.2e}"
    ht2.save(model, folder / "out", report)
    loaded = ht2.load(folder / "out", model=_build(name, 1, kwargs))
    with torch.no_grad():
        assert torch.equal(loaded(x), actual)
    return report


@pytest.mark.parametrize(
    "name", PROBLEMS + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW_PROBLEMS]
)
def test_timm_subclass_models_compress_exactly_and_round_trip(name: str, tmp_path: Path) -> None:
    report = _check_full_rank_and_round_trip(name, tmp_path)
    kept = [layer for layer in report.layers if layer.method == "dense"]
    assert all("convolution (groups=" in layer.reason for layer in kept), kept


@pytest.mark.slow
@pytest.mark.zoo
@pytest.mark.parametrize("name", family_models())
def test_every_timm_family_compresses_exactly_and_round_trips(name: str, tmp_path: Path) -> None:
    _check_full_rank_and_round_trip(name, tmp_path)
