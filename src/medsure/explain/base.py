"""The shared machinery of gradient-based class-activation maps (CAMs).

A CAM method sees the activation ``A (N, C, h, w)`` of a target layer and the gradient of the
class score with respect to it, and returns channel weights ``w (N, C, 1, 1)``; the map is
``ReLU(sum_c w_c A_c)``, bilinearly resized to the input. :class:`BaseCAM` does everything else —
hooks, batching, several target classes per image, grad mode, upsampling — so a new method is one
file with one :meth:`BaseCAM.channel_weights` (as in pytorch-grad-cam).

Hooks live only inside a ``with`` block (registered in ``__enter__``, removed in ``__exit__``, also
when the block raises), and gradients are taken with ``torch.autograd.grad`` on the hooked
activation, so no ``.grad`` is written to the model's parameters and nothing is retained between
calls. Works when the caller is inside ``torch.no_grad()``. The model's train/eval mode is left
as the caller set it (use eval).

>>> with GradCAM(model) as cam:
...     maps = cam(images, targets)      # (N, H, W)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from medsure.validation import input_error

__all__ = ["BaseCAM", "Targets", "last_conv_layer"]

Targets = np.ndarray | torch.Tensor | Sequence[int] | Sequence[Sequence[int]] | None


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` in ``model.modules()`` order."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise input_error(
            "model",
            type(model).__name__,
            "a model with an nn.Conv2d layer",
            "it has no nn.Conv2d layer; pass target_layer explicitly",
            raw=True,
        )
    return convs[-1]


class BaseCAM:
    """Class-activation maps from gradients at ``target_layer``; subclasses weight the channels.

    Parameters
    ----------
    model : nn.Module returning logits ``(N, K)``
    target_layer : module whose output is ``(N, C, h, w)``; default the last ``nn.Conv2d``
    relu : apply ReLU to the weighted sum (standard)
    upsample : bilinearly resize maps to the input's ``(H, W)``; False keeps ``(h, w)``
    batch_size : images per forward/backward pass

    Notes
    -----
    Use as a context manager; the forward hook is registered on enter and removed on exit.
    Calling outside a ``with`` block registers and removes the hook around that one call.
    """

    name: ClassVar[str] = ""  # the registry name (``medsure explain --method``)

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | None = None,
        *,
        relu: bool = True,
        upsample: bool = True,
        batch_size: int = 32,
    ) -> None:
        self.model = model
        self.target_layer = target_layer if target_layer is not None else last_conv_layer(model)
        self.relu = relu
        self.upsample = upsample
        self.batch_size = batch_size
        self._handle: RemovableHandle | None = None
        self._activation: torch.Tensor | None = None

    # ---- the one method-specific step -----------------------------------------------------------
    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """Weights ``(n, C, 1, 1)`` of the activation channels ``(n, C, h, w)`` given the gradient
        of the target class score with respect to them ``(n, C, h, w)``."""
        raise NotImplementedError

    # ---- hook management ------------------------------------------------------------------------
    def _hook(self, module: nn.Module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise input_error(
                f"target layer {type(module).__name__} output",
                str(getattr(output, "shape", type(output))),
                "a feature map (N, C, h, w)",
                raw=True,
            )
        # a leaf copy when the layer output carries no graph (frozen model, no_grad caller);
        # return a clone so in-place ops after the layer cannot alter the stored activation
        act = output if output.requires_grad else output.detach().requires_grad_(True)
        self._activation = act
        return act.clone()

    def __enter__(self) -> BaseCAM:
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

    # ---- computation --------------------------------------------------------------------------
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
            raise input_error("images", f"shape {tuple(x.shape)}", "(N, C, H, W)", raw=True)
        if not torch.is_floating_point(x):
            raise input_error("images", f"dtype {x.dtype}", "floating point", raw=True)
        n = x.shape[0]
        sets, single = _parse_targets(targets, n)
        out: list[list[np.ndarray]] = [[] for _ in range(n)]
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            self._batch(x[start:stop], sets[start:stop], out[start:stop])
        if single:
            return np.stack([o[0] for o in out]).astype(np.float32)
        return [
            np.stack(o).astype(np.float32) if o else np.zeros((0, *self._out_size(x)), dtype=np.float32) for o in out
        ]

    def _out_size(self, x: torch.Tensor) -> tuple[int, int]:
        if self.upsample:
            return int(x.shape[2]), int(x.shape[3])
        with torch.no_grad():
            self.model(x[:1])
        act = self._stored_activation()
        self._activation = None
        return int(act.shape[2]), int(act.shape[3])

    def _stored_activation(self) -> torch.Tensor:
        """The target layer's output of the last forward pass (the hook stores it)."""
        if self._activation is None:  # the hook never ran: the layer is not on the model's forward path
            raise input_error(
                "target_layer",
                type(self.target_layer).__name__,
                "a layer that the model's forward pass runs",
                raw=True,
            )
        return self._activation

    def _batch(self, x: torch.Tensor, sets: list, out: list[list[np.ndarray]]) -> None:
        """Maps of one batch for every label of every image; appended to ``out[i]``."""
        try:
            with torch.enable_grad():
                logits = self.model(x)
                act = self._stored_activation()
                if logits.ndim != 2:
                    raise input_error("model output", f"shape {tuple(logits.shape)}", "logits (N, K)", raw=True)
                k = logits.shape[1]
                if sets[0] is None:
                    sets = [[int(c)] for c in logits.argmax(dim=1).tolist()]
                for labels in sets:
                    bad = [c for c in labels if not 0 <= c < k]
                    if bad:
                        raise input_error(
                            "targets", bad, f"classes in range [0, {k})", "they are out of range for this model"
                        )
                # round r: the r-th label of every image that has one, in one backward pass
                rounds = max((len(s) for s in sets), default=0)
                for r in range(rounds):
                    rows = [i for i, s in enumerate(sets) if len(s) > r]
                    cls = [sets[i][r] for i in rows]
                    score = logits[rows, cls].sum()  # images are independent in eval mode
                    grad = torch.autograd.grad(score, act, retain_graph=r < rounds - 1)[0]
                    maps = self._maps(act[rows].detach(), grad[rows])
                    if self.upsample:
                        maps = F.interpolate(maps[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[
                            :, 0
                        ]
                    maps_np = maps.cpu().numpy()
                    for j, i in enumerate(rows):
                        out[i].append(maps_np[j])
        finally:
            self._activation = None

    def _maps(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``(ReLU of) sum_c w_c A_c``: ``(n, h, w)``."""
        cam = (self.channel_weights(act, grad) * act).sum(dim=1)
        return F.relu(cam) if self.relu else cam


def _parse_targets(targets: Targets, n: int) -> tuple[list, bool]:
    """Label lists per image (``[None] * n`` for the predicted class) and whether each image has
    exactly one target given as an index (the result is then one ``(N, H, W)`` array)."""
    if targets is None:
        return [None] * n, True
    if isinstance(targets, torch.Tensor):
        targets = targets.cpu().numpy()
    if isinstance(targets, np.ndarray) and targets.ndim == 1:
        if targets.shape[0] != n or not np.issubdtype(targets.dtype, np.integer):
            raise input_error("targets", f"shape {targets.shape} dtype {targets.dtype}", f"int ({n},)", raw=True)
        return [[int(t)] for t in targets], True
    targets = list(targets)
    if len(targets) != n:
        raise input_error("targets", f"{len(targets)} entries", f"one per image ({n})", raw=True)
    if all(isinstance(t, (int, np.integer)) for t in targets):
        return [[int(t)] for t in targets], True
    return [[int(c) for c in t] for t in targets], False
