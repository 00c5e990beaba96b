"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018) for classifiers.

Batched, for any layer whose output is a feature map ``(N, C, h, w)`` (default: the last
``nn.Conv2d`` of the model), for one target class per image or several (e.g. every label of a
conformal prediction set). Hooks live only inside a ``with`` block, and gradients are taken
with ``torch.autograd.grad`` on the hooked activation, so no ``.grad`` is written to the model's
parameters and nothing is retained between calls. Works when the caller is inside
``torch.no_grad()``. The model's train/eval mode is left as the caller set it (use eval).

>>> with GradCAM(model) as cam:
...     maps = cam(images, targets)      # (N, H, W)
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsure.errors import MedsureInputError

__all__ = ["GradCAM", "last_conv_layer", "grad_cam"]


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` in ``model.modules()`` order."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise MedsureInputError(f"{type(model).__name__} has no nn.Conv2d layer; pass target_layer explicitly")
    return convs[-1]


Targets = "np.ndarray | torch.Tensor | Sequence[int] | Sequence[Sequence[int]] | None"


class GradCAM:
    """Class-activation maps from gradients at ``target_layer``.

    Parameters
    ----------
    model : nn.Module returning logits ``(N, K)``
    target_layer : module whose output is ``(N, C, h, w)``; default the last ``nn.Conv2d``
    method : "gradcam" or "gradcam++"
    relu : apply ReLU to the weighted sum (standard Grad-CAM)
    upsample : bilinearly resize maps to the input's ``(H, W)``; False keeps ``(h, w)``
    batch_size : images per forward/backward pass

    Use as a context manager; the forward hook is registered on enter and removed on exit.
    Calling outside a ``with`` block registers and removes the hook around that one call.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | None = None, *, method: str = "gradcam",
                 relu: bool = True, upsample: bool = True, batch_size: int = 32) -> None:
        if method not in ("gradcam", "gradcam++"):
            raise MedsureInputError(f"method: got {method!r}, expected 'gradcam' or 'gradcam++'")
        self.model = model
        self.target_layer = target_layer if target_layer is not None else last_conv_layer(model)
        self.method = method
        self.relu = relu
        self.upsample = upsample
        self.batch_size = batch_size
        self._handle = None
        self._activation: torch.Tensor | None = None

    # ---- hook management -------------------------------------------------------------------
    def _hook(self, module: nn.Module, inputs, output):  # noqa: ANN001
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise MedsureInputError(
                f"target layer {type(module).__name__} returned {getattr(output, 'shape', type(output))}, "
                "expected a feature map (N, C, h, w)")
        # a leaf copy when the layer output carries no graph (frozen model, no_grad caller);
        # return a clone so in-place ops after the layer cannot alter the stored activation
        act = output if output.requires_grad else output.detach().requires_grad_(True)
        self._activation = act
        return act.clone()

    def __enter__(self) -> "GradCAM":
        if self._handle is None:
            self._handle = self.target_layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hook and drop the stored activation."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._activation = None

    # ---- computation -------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor | np.ndarray, targets: Targets = None):
        """Maps for ``images (N, C, H, W)``.

        Parameters
        ----------
        targets : None (the predicted class), ``(N,)`` class indices, or a list of N label lists
            (several classes per image, e.g. a conformal set; lists may be empty).

        Returns
        -------
        ndarray float32 ``(N, H, W)`` for None / ``(N,)`` targets; for label lists, a list of N
        arrays ``(len(labels_i), H, W)``. ``(h, w)`` replaces ``(H, W)`` when ``upsample=False``.
        """
        if self._handle is None:
            with self:
                return self(images, targets)
        x = torch.as_tensor(images)
        if x.ndim != 4:
            raise MedsureInputError(f"images: shape {tuple(x.shape)}, expected (N, C, H, W)")
        if not torch.is_floating_point(x):
            raise MedsureInputError(f"images: dtype {x.dtype}, expected floating point")
        n = x.shape[0]
        sets, single = self._parse_targets(targets, n)
        out: list[list[np.ndarray]] = [[] for _ in range(n)]
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            self._batch(x[start:stop], sets[start:stop], out[start:stop])
        if single:
            return np.stack([o[0] for o in out]).astype(np.float32)
        return [np.stack(o).astype(np.float32) if o else
                np.zeros((0, *self._out_size(x)), dtype=np.float32) for o in out]

    def _out_size(self, x: torch.Tensor) -> tuple[int, int]:
        if self.upsample:
            return int(x.shape[2]), int(x.shape[3])
        with torch.no_grad():
            self.model(x[:1])
        size = tuple(self._activation.shape[2:])
        self._activation = None
        return size  # type: ignore[return-value]

    @staticmethod
    def _parse_targets(targets: Targets, n: int) -> tuple[list[list[int]] | None, bool]:
        if targets is None:
            return [None] * n, True  # type: ignore[list-item]
        if isinstance(targets, torch.Tensor):
            targets = targets.cpu().numpy()
        if isinstance(targets, np.ndarray) and targets.ndim == 1:
            if targets.shape[0] != n or not np.issubdtype(targets.dtype, np.integer):
                raise MedsureInputError(f"targets: shape {targets.shape} dtype {targets.dtype}, expected int ({n},)")
            return [[int(t)] for t in targets], True
        targets = list(targets)  # type: ignore[arg-type]
        if len(targets) != n:
            raise MedsureInputError(f"targets: {len(targets)} entries, expected one per image ({n})")
        if all(isinstance(t, (int, np.integer)) for t in targets):
            return [[int(t)] for t in targets], True
        return [[int(c) for c in t] for t in targets], False

    def _batch(self, x: torch.Tensor, sets: list, out: list[list[np.ndarray]]) -> None:
        try:
            with torch.enable_grad():
                logits = self.model(x)
                act = self._activation
                if logits.ndim != 2:
                    raise MedsureInputError(f"model output shape {tuple(logits.shape)}, expected logits (N, K)")
                k = logits.shape[1]
                if sets[0] is None:
                    sets = [[int(c)] for c in logits.argmax(dim=1).tolist()]
                for labels in sets:
                    bad = [c for c in labels if not 0 <= c < k]
                    if bad:
                        raise MedsureInputError(f"targets: classes {bad} out of range [0, {k})")
                rounds = max((len(s) for s in sets), default=0)
                for r in range(rounds):
                    rows = [i for i, s in enumerate(sets) if len(s) > r]
                    cls = [sets[i][r] for i in rows]
                    score = logits[rows, cls].sum()  # images are independent in eval mode
                    grad = torch.autograd.grad(score, act, retain_graph=r < rounds - 1)[0]
                    maps = self._combine(act[rows].detach(), grad[rows], logits[rows, cls].detach())
                    if self.upsample:
                        maps = F.interpolate(maps[:, None], size=x.shape[2:], mode="bilinear",
                                             align_corners=False)[:, 0]
                    maps = maps.cpu().numpy()
                    for j, i in enumerate(rows):
                        out[i].append(maps[j])
        finally:
            self._activation = None

    def _combine(self, act: torch.Tensor, grad: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        if self.method == "gradcam":
            weights = grad.mean(dim=(2, 3), keepdim=True)
        else:
            # Grad-CAM++ with the exponential-score closed form: higher-order terms are
            # powers of the first derivative
            g2, g3 = grad ** 2, grad ** 3
            denom = 2 * g2 + act.sum(dim=(2, 3), keepdim=True) * g3
            alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                                torch.zeros_like(denom))
            weights = (alpha * F.relu(grad)).sum(dim=(2, 3), keepdim=True)
        cam = (weights * act).sum(dim=1)
        return F.relu(cam) if self.relu else cam


def grad_cam(model: nn.Module, images: torch.Tensor | np.ndarray, targets: Targets = None, *,
             target_layer: nn.Module | None = None, method: str = "gradcam", relu: bool = True,
             upsample: bool = True, batch_size: int = 32):
    """One-shot :class:`GradCAM`: hooks are registered and released inside this call."""
    with GradCAM(model, target_layer, method=method, relu=relu, upsample=upsample,
                 batch_size=batch_size) as cam:
        return cam(images, targets)
