"""Muon-style orthogonalised momentum, kept tiny for the experiment."""

import torch


def newton_schulz(g, steps=5):
    x = g / (g.norm() + 1e-7)
    for _ in range(steps):
        x = 1.5 * x - 0.5 * x @ x.T @ x
    return x
