"""mtlkit's weighting inside a PyTorch Lightning module (manual optimisation)."""

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mtlkit


class TwoTaskModule(L.LightningModule):
    def __init__(self, weighter: str = "pcgrad") -> None:
        super().__init__()
        self.automatic_optimization = False  # mtlkit fills .grad itself
        self.encoder = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.heads = nn.ModuleDict({"reg": nn.Linear(16, 1), "cls": nn.Linear(16, 2)})
        self.weighter = mtlkit.create_weighter(weighter, ["reg", "cls"])
        self.step = mtlkit.WeightedStep(self.weighter, shared=self.encoder.parameters(),
                                        steps_per_epoch=8)

    def training_step(self, batch, batch_idx):
        x, y_reg, y_cls = batch
        opt = self.optimizers()
        opt.zero_grad()
        z = self.encoder(x)
        losses = {
            "reg": nn.functional.mse_loss(self.heads["reg"](z).squeeze(1), y_reg),
            "cls": nn.functional.cross_entropy(self.heads["cls"](z), y_cls),
        }
        weights = self.step.backward(losses, features=z)  # instead of self.manual_backward
        opt.step()
        self.step.after_step()
        self.log_dict({f"weight/{k}": v for k, v in zip(losses, weights.tolist())})
        return sum(losses.values()).detach()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)  # includes the weighter's own


def main(max_steps: int = 16, weighter: str = "pcgrad") -> TwoTaskModule:
    torch.manual_seed(0)
    x = torch.randn(256, 10)
    data = TensorDataset(x, x[:, :3].sum(1), (x[:, 3] > 0).long())
    module = TwoTaskModule(weighter)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, DataLoader(data, batch_size=32, shuffle=True))
    return module


if __name__ == "__main__":
    main()
