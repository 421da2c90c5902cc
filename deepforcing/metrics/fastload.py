"""Loading models without the work that their weights then overwrite.

The loaders vbench uses build a network with random initialisation (seconds for ViT-L sized models on a
CPU: ``kaiming_uniform_`` / ``trunc_normal_`` over every weight) and copy the checkpoint over it. Here:

* ``meta_params()``: build a module with its parameters on the ``meta`` device (no memory, no init);
  buffers are real, so anything computed in a constructor is kept;
* ``load_into(model, sd)``: put the checkpoint's tensors in place of the meta parameters, each cast to the
  dtype the normal ``load_state_dict`` copy would give and made contiguous; every parameter and buffer must
  come from the checkpoint (strict), so no uninitialised value can stay.

The resulting weights are the same tensors as the reference loaders' (tests/metrics/test_fastload.py), so
scores do not change.
"""

from __future__ import annotations

import contextlib

import torch

_assigning = False  # load_into is putting real tensors in place (also when called inside meta_params)


@contextlib.contextmanager
def meta_params():
    """Parameters registered inside this block are created on the meta device (initialisers are no-ops)."""
    orig = torch.nn.Module.register_parameter

    def register(self, name, param):
        orig(self, name, param)
        if param is not None and param.device.type != "meta" and not _assigning:
            p = self._parameters[name]
            self._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = orig


def load_into(model: torch.nn.Module, sd: dict, drop: tuple[str, ...] = ()) -> torch.nn.Module:
    """``model.load_state_dict(sd)`` for a model built under ``meta_params``: strict on the model's keys
    (keys of ``sd`` the model does not have are ignored only if listed in ``drop``)."""
    expected = model.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected and k not in drop]
    if missing or extra:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    new = {k: sd[k].detach().to(v.dtype).contiguous() for k, v in expected.items()}
    global _assigning
    _assigning = True
    try:
        torch.nn.Module.load_state_dict(model, new, strict=True, assign=True)  # not an override of it
    finally:
        _assigning = False
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"parameters left uninitialised: {left[:5]}")
    return model
