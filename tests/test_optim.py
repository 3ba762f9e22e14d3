"""nerkit.optim: the fused AdamW matches torch's default one; bf16 master weights keep small updates."""
from __future__ import annotations

import torch

from nerkit.optim import MasterWeights, adamw


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


def test_master_weights_accumulate_updates_too_small_for_bf16():
    param = torch.nn.Parameter(torch.ones(4))
    master = MasterWeights([param], lr=1e-4)  # Adam steps of ~1e-4: below bf16's resolution at 1.0 (2^-7)
    assert param.dtype == torch.bfloat16
    for _ in range(200):
        master.zero_grad()
        (-param.float().sum()).backward()  # push every weight up
        master.step()
    assert master.masters()[0].dtype == torch.float32
    assert torch.allclose(master.masters()[0], torch.full((4,), 1.02), atol=1e-3)  # 200 steps of 1e-4
    assert torch.all(param > 1.0)  # the bf16 copy moved too, which bf16 updates alone never would
