"""The LightningModule: the model, the losses, the metrics and the optimizer schedule.

A batch is a batch of clips (one label each, decided by the mean of their frames' logits), or, for a causal
model trained for the stream, a dict of such a batch and one of windows of continuous video with a target
for every frame (torch_tsm.sequences); the two losses are added."""

import math

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from torch_tsm.model import build_model
from torch_tsm.sequences import IGNORE

OPTIMIZERS = ("adamw", "sgd")


class TSMClassifier(pl.LightningModule):
    def __init__(
        self,
        labels: list[str],
        num_segments: int = 8,
        width_mult: float = 0.5,
        shift: str = "causal",  # the one-way shift a live stream can run; "bidirectional": the paper's offline one; "none": TSN
        image_size: int = 64,
        pretrained: str | None = None,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
        freeze_epochs: int = 0,
        optimizer: str = "adamw",
        momentum: float = 0.9,  # sgd only
        head_lr_mult: float = 1.0,  # the classifier's learning rate is lr x this (the Bukva recipe: 10)
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
        self.save_hyperparameters()
        self.model = build_model(len(labels), num_segments, width_mult, shift, pretrained)
        self.model.labels, self.model.image_size = list(labels), image_size
        # Measured ~1.5x faster training on CPU at 64 px (bench/); values are unchanged.
        self.model.to(memory_format=torch.channels_last)
        num_classes = len(labels)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_top3 = MulticlassAccuracy(num_classes, top_k=min(3, num_classes), average="micro")
        self.train_frame_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE)
        self.val_frame_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE)

    def forward(self, clips: Tensor) -> Tensor:
        # (N, T, 3, H, W) uint8 or float pixels -> (N, K); the loader sends uint8, cast here on the device
        return self.model(clips.float())

    def on_train_start(self) -> None:
        self._freeze_backbone_if_due()  # a run resumed mid-epoch gets no on_train_epoch_start for that epoch

    def on_train_epoch_start(self) -> None:
        self._freeze_backbone_if_due()

    def _freeze_backbone_if_due(self) -> None:
        # The original two-stage recipe: train the classifier on a frozen backbone first.
        frozen = self.current_epoch < self.hparams.freeze_epochs
        for parameter in self.model.features.parameters():
            parameter.requires_grad_(not frozen)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Dropout draws from torch's generator: a resumed run must continue its stream, not restart it.
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.resumed_rng_state = checkpoint.get("torch_rng_state")

    def on_train_batch_start(self, batch: object, batch_index: int) -> None:
        # Restored here, not on load: starting the loaders in between draws from the generator too.
        if getattr(self, "resumed_rng_state", None) is not None:
            torch.set_rng_state(self.resumed_rng_state)
            self.resumed_rng_state = None

    def frame_logits_and_targets(self, sequences: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        # ((N, L, 3, H, W), (N, L)) -> (N*L, K) frame logits, (N*L,) targets; the first D frames of each window,
        # whose outputs depend on frames before it, left out (one frame back per shifted block)
        frames, targets = sequences
        logits = self.model.frame_logits(frames.float())
        targets = targets.clone()
        targets[:, : len(self.model.shifted_blocks())] = IGNORE
        return logits.flatten(0, 1), targets.flatten()

    def training_step(self, batch: tuple | dict | None, batch_index: int) -> Tensor | None:
        clips, sequences = (batch["clips"], batch["sequences"]) if isinstance(batch, dict) else (batch, None)
        losses = []
        if clips is not None:  # None: every clip of the batch failed to decode (already reported)
            logits = self(clips[0])
            losses.append(nn.functional.cross_entropy(logits, clips[1]))
            self.train_acc(logits, clips[1])
            self.log("train_acc", self.train_acc, prog_bar=True, on_step=False, on_epoch=True)
        if sequences is not None:
            logits, targets = self.frame_logits_and_targets(sequences)
            losses.append(nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE))
            self.train_frame_acc(logits, targets)
            self.log("train_frame_acc", self.train_frame_acc, on_step=False, on_epoch=True)
        if not losses:
            return None
        loss = sum(losses)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor] | None, batch_index: int, dataloader_idx: int = 0) -> None:
        if batch is None:
            return
        if dataloader_idx == 1:  # windows of continuous video: the accuracy of every frame in the loss
            logits, targets = self.frame_logits_and_targets(batch)
            self.val_frame_acc(logits, targets)
            self.log("val_frame_acc", self.val_frame_acc, prog_bar=True, add_dataloader_idx=False)
            return
        clips, labels = batch
        logits = self(clips)
        self.val_acc(logits, labels)
        self.val_top3(logits, labels)
        self.log("val_loss", nn.functional.cross_entropy(logits, labels), prog_bar=True, sync_dist=True, add_dataloader_idx=False)
        self.log("val_acc", self.val_acc, prog_bar=True, add_dataloader_idx=False)
        self.log("val_top3", self.val_top3, add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        # What the best checkpoint and the early stop watch: the clip accuracy, and for a model trained for
        # the stream the worse of it and the frame accuracy, so that neither the clips nor the stream is
        # shipped half-learned (the stream's letters follow its frame accuracy closely).
        score = self.val_acc.compute()
        if self.val_frame_acc.update_called:
            score = torch.minimum(score, self.val_frame_acc.compute())
        self.log("val_score", score, sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        groups = [
            {"params": self.model.features.parameters(), "lr": hp.lr},
            {"params": self.model.classifier.parameters(), "lr": hp.lr * hp.head_lr_mult},
        ]
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, weight_decay=hp.weight_decay)
        total = max(1, self.trainer.estimated_stepping_batches)
        warmup = min(total - 1, round(self.hparams.warmup_epochs * total / max(1, self.trainer.max_epochs)))

        def warmup_then_cosine(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
