"""The picture of an adversarial program: the program itself and a few adversarial inputs."""

from __future__ import annotations

from pathlib import Path

import torch

from safetransfer.attacks.reprogramming import AdversarialProgram
from safetransfer.plotting import pyplot, save_figure


def _rgb(img: torch.Tensor):
    img = img.detach().cpu().float()
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).clamp(0, 1).numpy()


@torch.no_grad()
def plot_program(program: AdversarialProgram, examples: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """The program (in pixel scale, grey = 0) next to the adversarial versions of ``examples``."""
    plt = pyplot()
    program = program.cpu()
    adv = program(examples.float().cpu())
    fig, axes = plt.subplots(1, 1 + adv.shape[0], figsize=(3.0 * (1 + adv.shape[0]), 3.3), squeeze=False)
    panels = [((program.program() + 1) / 2, "program P = tanh(W⊙M)")] + [(a, f"adversarial input {i + 1}")
                                                                         for i, a in enumerate(adv)]
    for ax, (img, caption) in zip(axes[0], panels):
        ax.imshow(_rgb(img), cmap="gray", vmin=0, vmax=1)
        ax.set_title(caption, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, None, path, title)
