"""Mixup and CutMix: exact mixing, box geometry, loss, reproducibility, halting after the period."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.trainables.test_engine import _cfg
from trainables.core.config import PhaseConfig, RecipeConfig
from trainables.method.mixing import make_mix_rng, mix_batch, mixed_cross_entropy
from trainables.method.recipes import phase_for_epoch
from trainables.run.engine import TrainingRun


def _batch(shape=(16, 3, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(*shape) + 1.0, torch.arange(shape[0]) % 5  # no zeros: boxes show


def _perm(seed: int, n: int) -> torch.Tensor:
    """The partner permutation mix_batch draws from a generator seeded the same way."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def test_off_is_the_identity_and_plain_cross_entropy():
    x, y = _batch()
    out, mix = mix_batch(x, y, 0.0, 0.0, make_mix_rng(0, 1, 0), torch.Generator())
    assert out is x and mix.lam == 1.0
    logits = torch.randn(16, 5)
    assert torch.equal(mixed_cross_entropy(logits, mix), F.cross_entropy(logits, y))


def test_mixup_blends_each_sample_with_its_partner():
    x, y = _batch()
    out, mix = mix_batch(x, y, 0.4, 0.0, make_mix_rng(0, 1, 0), torch.Generator().manual_seed(7))
    perm = _perm(7, 16)
    assert 0.0 < mix.lam < 1.0
    assert torch.allclose(out, mix.lam * x + (1 - mix.lam) * x[perm])
    assert torch.equal(mix.y2, y[perm])
    logits = torch.randn(16, 5)
    want = mix.lam * F.cross_entropy(logits, y) + (1 - mix.lam) * F.cross_entropy(logits, y[perm])
    assert mixed_cross_entropy(logits, mix) == pytest.approx(want.item())


@pytest.mark.parametrize("shape", [(16, 3, 8, 8), (16, 1, 40)])
def test_cutmix_pastes_one_box_and_lam_is_the_untouched_share(shape):
    x, y = _batch(shape)
    for seed in range(5):
        out, mix = mix_batch(
            x, y, 0.0, 1.0, make_mix_rng(seed, 1, 0), torch.Generator().manual_seed(seed)
        )
        perm = _perm(seed, 16)
        changed = (out != x).any(dim=1)  # [B, *spatial]: where a pixel came from the partner
        moved = perm != torch.arange(16)
        box = changed[moved][0]  # one box, the same for every sample with a partner
        assert box.any() and torch.equal(changed[moved], box.expand_as(changed[moved]))
        assert not changed[~moved].any()  # a sample paired with itself stays as it was
        assert mix.lam == pytest.approx(1.0 - box.float().mean().item())
        inside = box.expand_as(changed).unsqueeze(1).expand_as(out)
        assert torch.equal(out[inside], x[perm][inside])  # the box holds the partner's pixels
        assert torch.equal(out[~inside], x[~inside])  # everything else is untouched


def test_both_alphas_pick_one_method_per_batch_reproducibly():
    x, y = _batch()
    kinds = []
    for epoch in range(1, 21):
        a, ma = mix_batch(
            x, y, 0.4, 1.0, make_mix_rng(3, epoch, 0), torch.Generator().manual_seed(1)
        )
        b, mb = mix_batch(
            x, y, 0.4, 1.0, make_mix_rng(3, epoch, 0), torch.Generator().manual_seed(1)
        )
        assert torch.equal(a, b) and ma.lam == mb.lam  # same seeds, same batch
        # CutMix copies pixels (each equals x or its partner's); Mixup blends them.
        copied = ((a == x) | (a == x[_perm(1, 16)])).all()
        kinds.append("cutmix" if copied else "mixup")
    assert set(kinds) == {"mixup", "cutmix"}


def test_mixing_is_halted_after_the_period():
    r = RecipeConfig(critical=PhaseConfig(repeats=3, mixup_alpha=0.2, cutmix_alpha=1.0))
    during, after = phase_for_epoch(r, 4, 5, 10), phase_for_epoch(r, 5, 5, 10)
    assert (during.mixup_alpha, during.cutmix_alpha) == (0.2, 1.0)
    assert (after.mixup_alpha, after.cutmix_alpha) == (0.0, 0.0)


def test_training_with_mixup_then_without():
    recipe = {"critical": {"repeats": 1, "mixup_alpha": 0.4}, "after": {"repeats": 1}}
    run = TrainingRun(_cfg(recipe=recipe))
    m1 = run.run_epoch()
    assert m1["recipe/mixup_alpha"] == 0.4
    # Mixed batches credit the partner's label by its share: the accuracy is not a
    # multiple of 1/300 samples any more.
    assert (m1["train/acc"] * m1["samples"]) % 1 != pytest.approx(0.0, abs=1e-6)
    run.end_period(1)
    m2 = run.run_epoch()
    assert m2["recipe/mixup_alpha"] == 0.0
    assert (m2["train/acc"] * m2["samples"]) % 1 == pytest.approx(0.0, abs=1e-6)
