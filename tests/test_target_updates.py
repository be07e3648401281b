"""TorchRL's target updaters move SACv1Loss's target value network as the paper says."""

import pytest
import torch
from helpers import make_loss

from sac_tr.targets import make_target_updater


def _flat(params):
    return torch.cat([p.detach().flatten().clone() for p in params.values(True, True)])


def _nudge_online_value(loss):
    with torch.no_grad():
        for p in loss.value_network_params.values(True, True):
            p.add_(torch.randn_like(p))


def test_soft_update_moves_the_target_by_exactly_tau():
    loss = make_loss()
    updater = make_target_updater(loss, "soft", tau=0.1)
    for _ in range(3):
        _nudge_online_value(loss)
        source = _flat(loss.value_network_params)
        before = _flat(loss.target_value_network_params)
        updater.step()
        after = _flat(loss.target_value_network_params)
        # psibar <- tau psi + (1 - tau) psibar
        torch.testing.assert_close(after, 0.1 * source + 0.9 * before, rtol=0, atol=1e-6)
        assert not torch.allclose(after, source)


def test_hard_update_copies_every_n_steps():
    loss = make_loss()
    updater = make_target_updater(loss, "hard", hard_update_every=3)
    initial = _flat(loss.target_value_network_params)
    for step in range(1, 10):
        _nudge_online_value(loss)
        updater.step()
        target = _flat(loss.target_value_network_params)
        if step % 3 == 0:
            torch.testing.assert_close(target, _flat(loss.value_network_params), rtol=0, atol=0)
            initial = target
        else:
            torch.testing.assert_close(target, initial, rtol=0, atol=0)


def test_target_starts_as_a_copy_and_is_not_shared():
    loss = make_loss()
    make_target_updater(loss)
    torch.testing.assert_close(
        _flat(loss.target_value_network_params), _flat(loss.value_network_params)
    )
    _nudge_online_value(loss)
    assert not torch.allclose(
        _flat(loss.target_value_network_params), _flat(loss.value_network_params)
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "soft", "tau": 0.0}, "tau"),
        ({"kind": "hard", "hard_update_every": 0}, "hard_update_every"),
        ({"kind": "polyak"}, "soft' or 'hard"),
    ],
)
def test_bad_updater_settings_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_target_updater(make_loss(), **kwargs)
