"""nerkit.optim: the fused AdamW matches torch's default one."""
from __future__ import annotations

import torch

from nerkit.optim import adamw


def test_fused_adamw_takes_the_same_steps_as_the_default():
    torch.manual_seed(0)
    fused_model, plain_model = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    plain_model.load_state_dict(fused_model.state_dict())
    groups = lambda m: [{"params": [m.weight], "weight_decay": 0.01}, {"params": [m.bias], "lr": 1e-2, "weight_decay": 0.0}]  # noqa: E731
    fused = adamw(groups(fused_model), lr=1e-3)
    plain = torch.optim.AdamW(groups(plain_model), lr=1e-3)
    assert fused.defaults["fused"]
    x = torch.randn(16, 8)
    for _ in range(5):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            model(x).pow(2).sum().backward()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

