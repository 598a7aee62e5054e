"""The progress bar of a run bounded by max_steps says `Epoch 7`, not Lightning's `Epoch 7/-2`."""

from types import SimpleNamespace

from instructune.tracking import progress_bar


def test_step_bounded_runs_show_the_epoch_alone():
    [bar] = progress_bar(True)
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(7) == "Epoch 7   "  # padded to the width of "Validation"
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(1) == "Epoch 1/2 "
    assert progress_bar(False) == []
