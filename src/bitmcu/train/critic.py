"""The adversarial critic of a decoder (``train.adversarial``): a small float network, trained
beside the decoder and never exported, that tells the real training images of a class from
the decoder's samples of that class drawn from the prior. Its verdict on those samples joins
the decoder's loss, so what the chip draws at its temperature, not only what the encoder's
latents reconstruct, must look like the data: crisp where the pixel loss alone averages to a
blur, and no smudges where the prior reaches latents the encoder never used.

Hinge loss with spectral normalization and a class projection (Miyato et al., "Spectral
Normalization for Generative Adversarial Networks" and "cGANs with Projection
Discriminator", 2018). It learns from the user's images and labels alone, so the generic
recipe stays generic; it is another network than the judges of ``bitmcu judge``, trained on
other data (the training images, never the judges' test renders).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

WIDTHS = (16, 32, 64)  # channels of the critic's three stride-2 convolutions
NOISE = 24.0  # instance noise (pixel units, 0..255) added to every image the critic trains on
#               or judges in training: the renders' own pixel noise (std 9 on dice) is then no
#               cue, and the critic has to judge shapes (Sonderby et al., 2016)


class Critic(nn.Module):
    """Images (B, S, S) 0..255 and classes -> one realness score per image."""

    def __init__(self, n_classes: int):
        super().__init__()
        layers, c_in = [], 1
        for c in WIDTHS:
            layers += [spectral_norm(nn.Conv2d(c_in, c, 4, stride=2, padding=1)),
                       nn.LeakyReLU(0.2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.out = spectral_norm(nn.Linear(c_in, 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, c_in))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x.unsqueeze(1).float() / 127.5 - 1.0).sum((2, 3))
        return self.out(h).squeeze(1) + (self.embed(y) * h).sum(1)


class Adversary:
    """A :class:`Critic` and its optimizer: one step per batch (:meth:`step`), its verdict on the
    decoder's samples (:meth:`generator_loss`), and both states for the checkpoint."""

    def __init__(self, n_classes: int, lr: float, device):
        self.critic = Critic(n_classes).to(device)
        self.opt = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(0.5, 0.999))

    def step(self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor,
             gen: torch.Generator | None = None) -> float:
        """One hinge-loss step of the critic: real images of classes y score above +1, the
        decoder's samples of the same classes below -1, both with instance noise. Returns the
        critic's loss."""
        self.critic.train()
        loss = (torch.relu(1.0 - self.critic(noisy(real, gen), y)).mean()
                + torch.relu(1.0 + self.critic(noisy(fake.detach(), gen), y)).mean())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def generator_loss(self, fake: torch.Tensor, y: torch.Tensor,
                       gen: torch.Generator | None = None) -> torch.Tensor:
        """The decoder's adversarial loss on its samples: minus the critic's mean score (with
        instance noise, as the critic learns). Only the decoder gets gradients from it."""
        self.critic.requires_grad_(False)
        try:
            return -self.critic(noisy(fake, gen), y).mean()
        finally:
            self.critic.requires_grad_(True)

    def state_dict(self) -> dict:
        return {"model": self.critic.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])


def noisy(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """x plus :data:`NOISE` x N(0, 1) per pixel, drawn from ``gen`` (a resumed run draws the
    same)."""
    return x + NOISE * torch.randn(x.shape, generator=gen).to(x.device)
