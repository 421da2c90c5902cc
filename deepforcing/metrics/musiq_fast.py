"""MUSIQ without its padding: the same scores from fewer tokens.

pyiqa's MUSIQ pads each resized scale to a square grid of patches (49 at 224, 144 at 384) and masks the
padding inside attention with -1e3. For a frame that is not square the padding is up to a third of the
sequence (a 480x832 frame, resized to 295x512 by VBench: 353 tokens, 74 of them padding), and the convolutional
stem, every linear layer and the quadratic attention process it all. A padded key gets exp(-1e3 - max) = 0
in float32, and a padded query's output never reaches the class token, so removing the padded tokens
before the stem changes nothing but the order of float sums. :func:`musiq_mos` does exactly that and
otherwise follows ``MUSIQ.forward`` step by step; ``model(x)`` stays the reference
(``tests/metrics/test_fastpaths.py`` compares the two).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def musiq_mos(model, x: torch.Tensor) -> torch.Tensor:
    """MOS of each image of ``x`` ([B, 3, H, W] in [0, 1], all one size) by pyiqa ``MUSIQ`` in eval mode."""
    from pyiqa.archs.arch_util import dist_to_mos
    from pyiqa.data.multiscale_trans_util import get_multiscale_patches

    if model.training:
        raise ValueError("musiq_mos needs the model in eval mode (MUSIQ normalises its input only then)")
    patches = get_multiscale_patches((x - 0.5) * 2, **model.data_preprocess_opts)  # [B, seq, p*p*3 + 3]
    keep = patches[0, :, -1].bool()
    if not torch.equal(patches[:, :, -1].bool(), keep.expand_as(patches[:, :, -1])):
        raise ValueError("musiq_mos: images of one batch must share their size")
    patches = patches[:, keep]
    b, seq_len, _ = patches.shape
    spatial, scale = patches[:, :, -3], patches[:, :, -2]
    masks = torch.ones_like(spatial, dtype=torch.bool)
    t = patches[:, :, :-3].reshape(-1, 3, model.patch_size, model.patch_size)
    t = model.block1(model.root_pool(model.gn_root(model.conv_root(t))))
    t = model.embedding(t.permute(0, 2, 3, 1).reshape(b, seq_len, -1))  # TensorFlow's channel order
    t = model.transformer_encoder(t, spatial, scale, masks)
    return dist_to_mos(model.head(t[:, 0]).reshape(b, 1, -1).mean(dim=1))
