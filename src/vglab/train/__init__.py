"""How it is trained and measured."""
from vglab.train.loop import Member, RunResult, TrainConfig, train_group
from vglab.train import probes
__all__ = ["Member", "RunResult", "TrainConfig", "train_group", "probes"]
