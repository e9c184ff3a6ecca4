"""mtlkit's weighting in a plain PyTorch loop: no Trainer, no MultiTaskModel, no Task objects."""

import torch
from torch import nn

import mtlkit


def main(steps: int = 50, weighter: str = "nash_mtl") -> list[float]:
    torch.manual_seed(0)
    x = torch.randn(256, 10)
    y_reg, y_cls = x[:, :3].sum(1), (x[:, 3] > 0).long()  # two tasks on one input

    encoder = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
    heads = nn.ModuleDict({"reg": nn.Linear(16, 1), "cls": nn.Linear(16, 2)})
    w = mtlkit.create_weighter(weighter, ["reg", "cls"])
    step = mtlkit.WeightedStep(w, shared=encoder.parameters())
    params = [*encoder.parameters(), *heads.parameters(), *w.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)

    history = []
    for i in range(steps):
        idx = torch.randint(0, 256, (32,))
        opt.zero_grad()
        z = encoder(x[idx])
        losses = {
            "reg": nn.functional.mse_loss(heads["reg"](z).squeeze(1), y_reg[idx]),
            "cls": nn.functional.cross_entropy(heads["cls"](z), y_cls[idx]),
        }
        weights = step.backward(losses, features=z)  # fills .grad as the method prescribes
        opt.step()
        step.after_step()  # a no-op unless the method updates itself after the step
        history.append(sum(v.item() for v in losses.values()))
        if i % 10 == 0:
            print(f"step {i}: losses {[round(v.item(), 3) for v in losses.values()]}"
                  f" weights {[round(v, 3) for v in weights.tolist()]}")
    return history


if __name__ == "__main__":
    main()
