"""The bundled datasets, the augmentations and the reference models."""

import importlib.machinery
import importlib.util
import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pytest_hparams import MLP, SmallCNN, augmentation, breast_cancer, digits, initialise
from pytest_hparams import data as data_module
from pytest_hparams.data import flip, noise, rotation, shift
from pytest_hparams.models import ACTIVATIONS
from pytest_hparams.space import format_value

# --------------------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def split():
    return digits()


def _rows(*tensors):
    return sorted(tuple(row.tolist()) for t in tensors for row in t.reshape(len(t), -1))


def test_digits_is_a_seeded_60_20_20_split_of_all_1797_images(split):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    assert [len(part[1]) for part in (split.train, split.val, split.test)] == [1079, 359, 359]
    assert (split.features, split.classes, split.name) == (64, 10, "digits")
    inputs = torch.cat([split.train[0], split.val[0], split.test[0]])
    assert inputs.dtype == torch.float32 and inputs.min() >= 0 and inputs.max() <= 1
    assert split.train[1].dtype == torch.long
    bunch = sklearn_datasets.load_digits()
    assert _rows(split.train[0], split.val[0], split.test[0]) == _rows(
        torch.tensor(bunch.data, dtype=torch.float32) / 16)


def test_digits_split_is_the_same_for_the_same_seed_and_differs_for_another(split):
    again, other = digits(), digits(seed=1)
    assert torch.equal(split.train[0], again.train[0])
    assert torch.equal(split.test[1], again.test[1])
    assert not torch.equal(split.train[1], other.train[1])


def test_digit_images_hold_the_same_split_as_8x8_images(split):
    images = digits(images=True)
    assert images.train[0].shape == (1079, 1, 8, 8)
    assert images.features == 64
    assert torch.equal(images.train[0].reshape(-1, 64), split.train[0])
    assert torch.equal(images.val[1], split.val[1])


def test_breast_cancer_is_standardised_with_the_training_statistics():
    cancer = breast_cancer()
    assert [len(part[1]) for part in (cancer.train, cancer.val, cancer.test)] == [341, 114, 114]
    assert (cancer.features, cancer.classes) == (30, 2)
    train = cancer.train[0]
    assert torch.allclose(train.mean(0), torch.zeros(30), atol=1e-4)
    assert torch.allclose(train.std(0), torch.ones(30), atol=1e-4)
    # validation and test use the training mean and spread, so theirs are near 0 and 1 only
    assert not torch.allclose(cancer.val[0].mean(0), torch.zeros(30), atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), val=st.floats(0.05, 0.4), test=st.floats(0.05, 0.4))
def test_any_split_covers_every_example_once(seed, val, test):
    cancer = breast_cancer(seed=seed, val_fraction=val, test_fraction=test)
    sizes = [len(part[1]) for part in (cancer.train, cancer.val, cancer.test)]
    assert sizes[1:] == [round(569 * val), round(569 * test)]
    assert sum(sizes) == 569
    labels = torch.cat([cancer.train[1], cancer.val[1], cancer.test[1]])
    assert int(labels.sum()) == 357  # the benign count of the whole dataset


def test_the_bundled_files_read_as_scikit_learns_own_loaders_read_them():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    for name, loader in (("digits.csv.gz", "load_digits"),
                         ("breast_cancer.csv", "load_breast_cancer")):
        data, target = data_module._bundled(name, loader)
        bunch = getattr(sklearn_datasets, loader)()
        assert data.dtype == bunch.data.dtype and target.dtype == bunch.target.dtype
        assert (data == bunch.data).all() and (target == bunch.target).all()


def test_loading_a_dataset_leaves_scikit_learn_unimported():
    code = ("import sys; from pytest_hparams.data import digits, breast_cancer; "
            "digits(); breast_cancer(); print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('sklearn', 'scipy')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_a_scikit_learn_that_keeps_its_files_elsewhere_is_asked_through_its_loader(
        monkeypatch, tmp_path, split):
    pytest.importorskip("sklearn.datasets")
    elsewhere = importlib.machinery.ModuleSpec("sklearn", None, is_package=True)
    elsewhere.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: elsewhere)
    again = digits()
    assert torch.equal(again.train[0], split.train[0])
    assert torch.equal(again.test[1], split.test[1])


@pytest.mark.parametrize("missing", ["sklearn", "sklearn.datasets"])
def test_a_missing_scikit_learn_says_what_to_install(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)
    if missing == "sklearn.datasets":  # found, but its files are not where they were
        elsewhere = importlib.machinery.ModuleSpec("sklearn", None, is_package=True)
        elsewhere.submodule_search_locations = []
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: elsewhere)
    with pytest.raises(ImportError, match=r"pip install 'pytest-hparams\[data\]'"):
        digits()


# --------------------------------------------------------------------------- augmentations


@pytest.mark.parametrize("name", ["rotation", "shift", "flip", "noise"])
@pytest.mark.parametrize("shape", [(16, 64), (16, 1, 8, 8)])
def test_augmentations_keep_the_shape_of_flat_and_image_batches(name, shape):
    inputs = torch.rand(shape)
    outputs = augmentation(name)(inputs)
    assert outputs.shape == inputs.shape
    assert not torch.equal(outputs, inputs)


@pytest.mark.parametrize("name", ["rotation", "shift", "flip", "noise"])
def test_augmentations_draw_from_torchs_seeded_generator(name):
    inputs = torch.rand(8, 1, 8, 8)
    torch.manual_seed(3)
    first = augmentation(name)(inputs)
    torch.manual_seed(3)
    assert torch.equal(augmentation(name)(inputs), first)


def test_zero_rotation_and_zero_shift_leave_images_unchanged():
    inputs = torch.rand(8, 1, 8, 8)
    assert torch.allclose(rotation(0)(inputs), inputs, atol=1e-5)
    assert torch.allclose(shift(0)(inputs), inputs, atol=1e-5)


def test_a_quarter_turn_rotates_a_stripe_from_a_row_to_a_column():
    image = torch.zeros(1, 1, 8, 8)
    image[..., 3:5, :] = 1.0  # a horizontal band through the centre
    turned = rotation(90)(image.expand(64, 1, 8, 8))
    # each image turned by its own angle in [-90°, 90°]: the most-turned ones are vertical bands
    columns = turned[..., 2:6, 3:5].mean(dim=(1, 2, 3))
    assert columns.max() > 0.9 and turned[..., 3:5, 0].mean(dim=(1, 2)).min() < 1.0


def test_flip_mirrors_some_images_and_leaves_the_others():
    inputs = torch.rand(200, 1, 8, 8)
    outputs = flip()(inputs)
    mirrored = (outputs == inputs.flip(-1)).flatten(1).all(1)
    unchanged = (outputs == inputs).flatten(1).all(1)
    assert bool((mirrored | unchanged).all())
    assert 50 < int(mirrored.sum()) < 150


def test_noise_has_the_standard_deviation_asked_for():
    inputs = torch.zeros(100_000)
    assert math.isclose(float(noise(0.2)(inputs).std()), 0.2, rel_tol=0.02)


def test_augmentations_are_named_in_ids_and_tables():
    assert [format_value(augmentation(n)) for n in ("rotation", "shift", "flip", "noise")] == [
        "rotation(15)", "shift(1)", "flip", "noise(0.1)"]
    assert format_value(rotation(30)) == "rotation(30)"


def test_an_unknown_augmentation_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown augmentation 'blur'; choose from rotation, shift"):
        augmentation("blur")


def test_flat_inputs_that_are_not_square_images_are_refused():
    with pytest.raises(ValueError, match=r"square images, got inputs of shape \(4, 30\)"):
        rotation()(torch.rand(4, 30))


# --------------------------------------------------------------------------- models


def _linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_mlp_has_the_depth_and_width_asked_for():
    model = MLP(64, 10, hidden=32, layers=3)
    assert [(m.in_features, m.out_features) for m in _linears(model)] == [
        (64, 32), (32, 32), (32, 32), (32, 10)]
    assert model(torch.rand(5, 64)).shape == (5, 10)


def test_mlp_takes_one_width_per_layer_and_zero_layers_is_a_linear_model():
    assert [m.out_features for m in _linears(MLP(30, 2, hidden=[16, 8]))] == [16, 8, 2]
    assert len(_linears(MLP(64, 10, layers=0))) == 1


def test_mlp_flattens_images():
    assert MLP()(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_dropout_layers_are_there_only_when_asked_for():
    assert not any(isinstance(m, nn.Dropout) for m in MLP(layers=2).modules())
    drops = [m for m in MLP(layers=2, dropout=0.3).modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.3, 0.3]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_builds_and_runs(name):
    model = MLP(8, 3, hidden=4, layers=2, activation=name)
    assert sum(isinstance(m, ACTIVATIONS[name]) for m in model.modules()) == 2
    assert torch.isfinite(model(torch.randn(2, 8))).all()


def test_an_unknown_activation_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown activation 'swish'; choose from relu, tanh"):
        MLP(activation="swish")


def test_initialisations_follow_their_scheme():
    torch.manual_seed(0)
    fan_in, fan_out = 64, 256
    for init, bound in (("xavier", math.sqrt(6 / (fan_in + fan_out))),
                        ("kaiming", math.sqrt(6 / fan_in))):
        weight = _linears(MLP(fan_in, 10, hidden=fan_out, init=init))[0].weight.detach()
        assert float(weight.abs().max()) <= bound
        assert float(weight.abs().max()) > 0.9 * bound
    small = _linears(MLP(64, 10, hidden=256, init="normal"))[0]
    assert math.isclose(float(small.weight.detach().std()), 0.01, rel_tol=0.05)
    assert not small.bias.detach().any()
    assert not any(p.detach().any() for p in MLP(init="zeros").parameters())


def test_default_initialisation_is_pytorchs_own():
    torch.manual_seed(1)
    ours = MLP(init="default")
    torch.manual_seed(1)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), plain.parameters(),
                                                 strict=True))


def test_an_unknown_initialisation_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown init 'orthogonal'; choose from default"):
        initialise(MLP(), "orthogonal")


@pytest.mark.parametrize("side", [8, 7, 28])
def test_small_cnn_classifies_square_images_of_any_side(side):
    model = SmallCNN(classes=10, channels=4, side=side, dropout=0.1)
    assert model(torch.rand(2, 1, side, side)).shape == (2, 10)


def test_small_cnn_initialises_its_convolutions_too():
    model = SmallCNN(init="zeros")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and not any(c.weight.detach().any() for c in convs)
