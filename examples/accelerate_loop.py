"""mtlkit's weighting in a Hugging Face Accelerate loop."""

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mtlkit


def main(epochs: int = 2, weighter: str = "cagrad") -> list[float]:
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    x = torch.randn(256, 10)
    data = TensorDataset(x, x[:, :3].sum(1), (x[:, 3] > 0).long())
    encoder = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
    heads = nn.ModuleDict({"reg": nn.Linear(16, 1), "cls": nn.Linear(16, 2)})
    w = mtlkit.create_weighter(weighter, ["reg", "cls"])
    opt = torch.optim.Adam([*encoder.parameters(), *heads.parameters(), *w.parameters()], lr=1e-2)
    loader = DataLoader(data, batch_size=32, shuffle=True)
    encoder, heads, opt, loader = accelerator.prepare(encoder, heads, opt, loader)
    # the scaler is Accelerate's when it runs fp16, None otherwise
    step = mtlkit.WeightedStep(w, shared=encoder.parameters(), scaler=accelerator.scaler,
                               steps_per_epoch=len(loader))
    totals = []
    for _ in range(epochs):
        for xb, y_reg, y_cls in loader:
            opt.zero_grad()
            z = encoder(xb)
            losses = {
                "reg": nn.functional.mse_loss(heads["reg"](z).squeeze(1), y_reg),
                "cls": nn.functional.cross_entropy(heads["cls"](z), y_cls),
            }
            step.backward(losses, features=z)  # instead of accelerator.backward
            opt.step()
            step.after_step()
            totals.append(sum(v.item() for v in losses.values()))
    return totals


if __name__ == "__main__":
    main()
