"""Fast evaluators of the Q ensemble and the value network (the losses' ``q_evaluator`` and
``value_evaluator``): the input keys concatenated in the module's ``in_keys`` order, as TorchRL's
``MLP`` does, then ``mlp_apply`` over the (stacked) parameters."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from sac_tr.accel.mlp import Plan, mlp_apply

__all__ = ["MLPQEnsemble", "MLPValue"]


def _features(in_keys: list[NestedKey], td: TensorDictBase, replace: dict) -> torch.Tensor:
    return torch.cat([replace[k] if k in replace else td.get(k) for k in in_keys], -1)


class MLPQEnsemble:
    """``Q_i(s, a)`` for every member ``i`` of an ensemble of plain MLPs in one batched call."""

    def __init__(self, plan: Plan, in_keys: list[NestedKey], action_key: NestedKey) -> None:
        self.plan, self.in_keys, self.action_key = plan, list(in_keys), action_key

    def _inputs(self, td: TensorDictBase, action: torch.Tensor | None) -> torch.Tensor:
        return _features(self.in_keys, td, {} if action is None else {self.action_key: action})

    def values(
        self, td: TensorDictBase, action: torch.Tensor | None, params: TensorDictBase
    ) -> torch.Tensor:
        """``[N, *B]``; ``action=None`` reads the replayed action from ``td``."""
        x = self._inputs(td, action)
        q = mlp_apply(self.plan, params, x.reshape(-1, x.shape[-1]))  # [N, B, 1]
        return q.reshape(q.shape[0], *x.shape[:-1])

    def replayed_and_fresh(
        self, td: TensorDictBase, fresh_action: torch.Tensor, params: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Q_i(s, a)`` (gradients to ``params``) and ``Q_i(s, a~)`` (gradients to ``a~`` only),
        ``[N, *B]`` each, from one call over the ``2B`` rows (``weight_rows=B``)."""
        replayed, fresh = self._inputs(td, None), self._inputs(td, fresh_action)
        batch_shape, width = replayed.shape[:-1], replayed.shape[-1]
        rows = replayed.numel() // width
        x = torch.cat([replayed.reshape(rows, width), fresh.reshape(rows, width)], 0)
        q = mlp_apply(self.plan, params, x, weight_rows=rows)
        q = q.reshape(q.shape[0], 2, *batch_shape)  # [N, 2B, 1] -> [N, 2, *B]
        return q[:, 0], q[:, 1]


class MLPValue:
    """``V(s)`` of a plain-MLP value network, ``[*B]``."""

    def __init__(self, plan: Plan, in_keys: list[NestedKey]) -> None:
        self.plan, self.in_keys = plan, list(in_keys)

    def values(self, td: TensorDictBase, params: TensorDictBase) -> torch.Tensor:
        x = _features(self.in_keys, td, {})
        return mlp_apply(self.plan, params, x.reshape(-1, x.shape[-1])).reshape(x.shape[:-1])
