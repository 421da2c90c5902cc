"""Flow-matching scheduler as the causal Wan pipelines use it (shift, warped few-step lists)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deepforcing.errors import ConfigError


class FlowMatch:
    """Shifted flow-matching schedule over ``num_train`` training timesteps.

    ``sigma_i = linspace(1, sigma_min, num_train + 1)[:-1]`` (``extra_one_step``), then shifted by
    ``shift*s / (1 + (shift-1)*s)``; ``timesteps = num_train * sigma``. Tables are float32 as in the
    reference; conversions to x0 run in float64.
    """

    def __init__(self, shift: float = 5.0, num_train: int = 1000, sigma_min: float = 0.0, extra_one_step: bool = True):
        if shift <= 0:
            raise ConfigError(f"timestep shift must be positive, got {shift}")
        self.shift, self.num_train = shift, num_train
        n = num_train + 1 if extra_one_step else num_train
        sigmas = torch.linspace(1.0, sigma_min, n)
        if extra_one_step:
            sigmas = sigmas[:-1]
        self.sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        self.timesteps = self.sigmas * num_train

    def warp(self, nominal: Sequence[int]) -> torch.Tensor:
        """Map nominal steps (e.g. 1000/750/500/250) onto the shifted schedule: ``[t_ext[N - s]]``.

        ``t_ext`` is the timestep table with 0 appended, so nominal step 0 maps to t = 0.
        """
        for s in nominal:
            if not 0 <= int(s) <= self.num_train:
                raise ConfigError(f"denoising step {s} is outside [0, {self.num_train}]")
        ext = torch.cat([self.timesteps, torch.zeros(1)])
        return ext[self.num_train - torch.as_tensor(list(nominal), dtype=torch.long)]

    def step_list(self, nominal: Sequence[int], warp: bool = True) -> list[float]:
        """The float timesteps the rollout actually uses."""
        if not nominal:
            raise ConfigError("denoising step list is empty")
        if warp:
            return [float(t) for t in self.warp(nominal)]
        return [float(torch.tensor(float(s), dtype=torch.float32)) for s in nominal]

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma of the nearest table timestep, for every entry of ``t`` (any shape)."""
        flat = t.reshape(-1).to(self.timesteps.dtype).cpu()
        idx = (self.timesteps[None, :] - flat[:, None]).abs().argmin(dim=1)
        return self.sigmas[idx].reshape(t.shape)

    @staticmethod
    def _bcast(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return s.reshape(*s.shape, *([1] * (like.dim() - s.dim())))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(1 - sigma_t) x0 + sigma_t noise``; ``t`` has the leading shape of ``x0`` (e.g. [B, F])."""
        s = self._bcast(self.sigma(t).to(x0.device), x0)
        return ((1 - s) * x0 + s * noise).type_as(noise)

    def flow_to_x0(self, flow: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x0 = x_t - sigma_t * flow`` in float64, cast back to ``flow``'s dtype."""
        s = self._bcast(self.sigma(t).to(torch.float64).to(flow.device), flow)
        return (x_t.double() - s * flow.double()).to(flow.dtype)

    def euler_step(self, flow: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """One Euler step of the flow ODE: ``x_t + (sigma_next - sigma_t) * flow`` (float64, cast back)."""
        s = self._bcast(self.sigma(t).to(torch.float64).to(flow.device), flow)
        s_next = self._bcast(self.sigma(t_next).to(torch.float64).to(flow.device), flow)
        return (x_t.double() + (s_next - s) * flow.double()).to(flow.dtype)
