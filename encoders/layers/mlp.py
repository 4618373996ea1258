"""A plain multilayer perceptron."""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """Linear layers with an activation between them (none after the last unless asked).

    Args:
        in_dim: Input width.
        hidden_dim: Width of the hidden layers.
        out_dim: Output width.
        num_layers: Number of linear layers (>= 1).
        activation: Activation module class.
        final_activation: Also apply the activation after the last layer.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        activation: type[nn.Module] = nn.SiLU,
        final_activation: bool = False,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < num_layers - 1 or final_activation:
                layers.append(activation())
        super().__init__(*layers)
