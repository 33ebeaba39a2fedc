"""Issue #10's last untried lever, an adversarial loss (the paper's own suggestion against the blur of pixel losses),
as a fine-tuning probe of the shipped model; judged with ``quality.py`` on HELEN photos (people never trained on).

    python benchmarks/adversarial_probe.py recipes/ablations/identity-blur.yaml --weight 0.02 \
        --set train.identity_blur=0 --set train.steps=500 --set train.output=runs/train/adv02
    python benchmarks/quality.py --set helen-test --photos 330 --folds 0 --no-baseline ... \
        --model 'adversarial 0.02=runs/train/adv02/checkpoints/step-000500.safetensors'

A PatchGAN critic (four spectrally normalised convolutions: 112 px -> 14 x 14 scores, each seeing 38 px) tells the
training targets (the person's average or morph, on the plain background) from the decoder's warped output, with
least-squares GAN losses (Mao et al. 2017); it takes one Adam step (rate 2e-4, betas 0.5/0.999) per training step on
that step's batch. The decoder's extra term is ``weight * 0.5 * mean((D(output) - 1)^2)``, added to facekit's own loss
by wrapping :func:`facekit.losses.losses` where ``facekit.train`` calls it: the loop, pool, other terms and checkpoints
are facekit's own. The discriminator is not checkpointed (no ``--resume``); its per-step means go to
``TRAIN_OUTPUT.adv.csv``. Not a recipe option: it did not pay (benchmarks/RESULTS.md "selection-adversarial").
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

import facekit.losses
import facekit.train
from facekit.recipe import load_recipe


class Patches(nn.Module):
    """A PatchGAN critic on [0, 1] images: one score per 38 px window (stride 8)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(3, w, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * w, 1, 3, 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--weight", type=float, default=0.02, help="weight of the decoder's adversarial term")
    parser.add_argument("--set", action="append", default=[], help="recipe override, as facekit run --set")
    parser.add_argument("--seed", type=int, default=1234, help="the discriminator's initialisation")
    args = parser.parse_args()
    plan = load_recipe(args.recipe, args.set)
    torch.manual_seed(args.seed)
    critic = Patches()
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=2e-4, betas=(0.5, 0.999))
    original = facekit.losses.losses
    log_path = Path(f"{plan.recipe.train.output}.adv.csv")
    log_path.parent.mkdir(parents=True, exist_ok=True)

    with log_path.open("w") as log:
        log.write("critic_real,critic_fake,adversarial\n")

        def with_adversary(out: Any, batch: dict[str, torch.Tensor], *rest: Any, **named: Any) -> Any:
            terms = original(out, batch, *rest, **named)
            fake, real = out.image.float(), batch["image"]
            critic.to(real.device)  # in place: the optimizer keeps the same parameters (helper-68: a GPU recipe)
            critic_optimizer.zero_grad(set_to_none=True)  # its own gradients: the decoder's Adam has none
            on_real, on_fake = critic(real), critic(fake.detach())
            critic_loss = 0.5 * (
                F.mse_loss(on_real, torch.ones_like(on_real)) + F.mse_loss(on_fake, torch.zeros_like(on_fake))
            )
            critic_loss.backward()
            critic_optimizer.step()
            critic.requires_grad_(False)
            judged = critic(fake)
            critic.requires_grad_(True)
            adversarial = 0.5 * F.mse_loss(judged, torch.ones_like(judged))
            log.write(
                f"{float(on_real.detach().mean()):.4f},{float(on_fake.detach().mean()):.4f},{float(adversarial.detach()):.4f}\n"
            )
            log.flush()
            terms["loss"] = terms["loss"] + args.weight * adversarial
            return terms

        facekit.train.losses = with_adversary  # type: ignore[assignment]  # train.py imported the name
        facekit.train.train(plan, resume=False, progress=False)


if __name__ == "__main__":
    main()
