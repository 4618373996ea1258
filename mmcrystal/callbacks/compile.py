"""Optional ``torch.compile`` of a task's networks, as a callback so recipes switch it on without code changes.

Modules are compiled in place (``nn.Module.compile``): parameter names, checkpoints, EMA copies and
``save_pretrained`` folders are unchanged, and DDP wraps the task as usual. Which submodules: the callback's
``targets``, else the task's ``compile_targets`` (`mmcrystal.tasks.base.TaskBase`). Crystal batches vary in atom
count, so ``dynamic=True`` by default (one graph for all sizes instead of a recompile per size).
"""

from __future__ import annotations

import logging

import lightning as L

__all__ = ["CompileNetworks"]

log = logging.getLogger(__name__)


class CompileNetworks(L.Callback):
    """Compile submodules of the task before training.

    Args:
        targets: Dotted submodule names (``"model.denoiser"``); default: the task's ``compile_targets``.
        mode: ``torch.compile`` mode (None, ``"reduce-overhead"``, ``"max-autotune"``).
        dynamic: Dynamic shapes (crystal batches vary in size).
        backend: ``torch.compile`` backend (``"inductor"``; ``"eager"`` only traces, to check graph capture).
    """

    def __init__(
        self,
        targets: list[str] | None = None,
        mode: str | None = None,
        dynamic: bool | None = True,
        backend: str = "inductor",
    ):
        self.targets, self.mode, self.dynamic, self.backend = targets, mode, dynamic, backend
        self.compiled: list[str] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.compiled:
            return
        targets = self.targets if self.targets is not None else getattr(pl_module, "compile_targets", ("model",))
        for name in targets:
            try:
                module = pl_module.get_submodule(name)
            except AttributeError as err:
                raise ValueError(f"CompileNetworks: {type(pl_module).__name__} has no submodule {name!r}") from err
            module.compile(mode=self.mode, dynamic=self.dynamic, backend=self.backend)
            self.compiled.append(name)
        log.info("torch.compile (%s, mode=%s, dynamic=%s): %s", self.backend, self.mode, self.dynamic,
                 ", ".join(self.compiled))  # fmt: skip
