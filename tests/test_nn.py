"""ddpgrad.nn against PyTorch: layers, losses, init, Module mechanics, state_dict, clipping.

Parity tests build the same model with ``torch.nn`` and ``ddpgrad.nn`` (one builder, two
libraries: the APIs are the same), copy PyTorch's weights into ours through ``load_state_dict``
and compare forward values and every gradient in float64.
"""

import collections
import copy
import math

import numpy as np
import pytest

import ddpgrad as dg
import ddpgrad.nn as nn
import ddpgrad.nn.functional as F

RTOL, ATOL = 1e-10, 1e-12


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="PyTorch (CPU) is the parity oracle: pip install torch==2.13.0")


def rng(seed=0):
    return np.random.default_rng(seed)


def close(ours, theirs, rtol=RTOL, atol=ATOL):
    ours = ours.detach().numpy() if isinstance(ours, dg.Tensor) else ours
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


def twins(torch, build, seed=2):
    """``build(nn, tensor)`` made with PyTorch and with ddpgrad, in float64; PyTorch's parameters get
    random N(0, 1) values (so LayerNorm's ones and zeros test something) and ours get a copy."""
    theirs = build(torch.nn, lambda a: torch.tensor(np.asarray(a))).double()
    gen = rng(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(gen.standard_normal(tuple(p.shape))))
    ours = build(nn, lambda a: dg.tensor(np.asarray(a))).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def assert_layer_parity(torch, ours, theirs, x, input_grad=True, seed=1):
    """Same output, and after backward of a random upstream gradient, same input and parameter grads."""
    xt, xo = torch.tensor(x, requires_grad=input_grad), dg.tensor(x, requires_grad=input_grad)
    yt, yo = theirs(xt), ours(xo)
    close(yo, yt)
    g = rng(seed).standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(g))
    yo.backward(dg.tensor(g))
    if input_grad:
        close(xo.grad, xt.grad)
    their_params = dict(theirs.named_parameters())
    our_params = dict(ours.named_parameters())
    assert list(our_params) == list(their_params)
    for name, p in our_params.items():
        close(p.grad, their_params[name].grad)


# ============================================================================ layers vs PyTorch
LAYERS = {
    "linear": (lambda nn, T: nn.Linear(5, 3), (4, 5)),
    "linear_3d_input": (lambda nn, T: nn.Linear(5, 3), (2, 4, 5)),
    "linear_1d_input": (lambda nn, T: nn.Linear(5, 3), (5,)),
    "linear_no_bias": (lambda nn, T: nn.Linear(5, 3, bias=False), (4, 5)),
    "relu": (lambda nn, T: nn.ReLU(), (4, 5)),
    "tanh": (lambda nn, T: nn.Tanh(), (4, 5)),
    "sigmoid": (lambda nn, T: nn.Sigmoid(), (4, 5)),
    "gelu": (lambda nn, T: nn.GELU(), (4, 5)),
    "gelu_tanh": (lambda nn, T: nn.GELU(approximate="tanh"), (4, 5)),
    "softmax": (lambda nn, T: nn.Softmax(dim=1), (4, 5)),
    "softmax_dim0_3d": (lambda nn, T: nn.Softmax(dim=0), (3, 4, 5)),
    "log_softmax": (lambda nn, T: nn.LogSoftmax(dim=-1), (4, 5)),
    "layernorm": (lambda nn, T: nn.LayerNorm(5), (3, 4, 5)),
    "layernorm_2d_shape": (lambda nn, T: nn.LayerNorm([4, 5], eps=1e-3), (3, 4, 5)),
    "layernorm_no_affine": (lambda nn, T: nn.LayerNorm(5, elementwise_affine=False), (4, 5)),
    "layernorm_no_bias": (lambda nn, T: nn.LayerNorm(5, bias=False), (4, 5)),
    "flatten": (lambda nn, T: nn.Flatten(), (2, 3, 4, 5)),
    "flatten_range": (lambda nn, T: nn.Flatten(0, 2), (2, 3, 4, 5)),
    "identity": (lambda nn, T: nn.Identity(7, unused=True), (4, 5)),
    "dropout_eval": (lambda nn, T: nn.Dropout(0.5).eval(), (4, 5)),
    "dropout_p0": (lambda nn, T: nn.Dropout(0.0), (4, 5)),
    "sequential_mlp": (lambda nn, T: nn.Sequential(
        nn.Linear(5, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3),
        nn.LogSoftmax(dim=1)), (6, 5)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_forward_and_backward_match_pytorch(torch, name):
    build, shape = LAYERS[name]
    ours, theirs = twins(torch, build)
    assert_layer_parity(torch, ours, theirs, rng(3).standard_normal(shape))


def test_embedding_matches_pytorch_and_padding_row_gets_no_gradient(torch):
    ours, theirs = twins(torch, lambda nn, T: nn.Embedding(7, 4, padding_idx=-2))
    assert ours.padding_idx == theirs.padding_idx == 5
    idx = np.array([[0, 5, 3, 3], [6, 5, 1, 0]])
    assert_layer_parity(torch, ours, theirs, idx, input_grad=False)
    assert not ours.weight.grad.numpy()[5].any()


def test_embedding_init_is_standard_normal_with_zero_padding_row():
    dg.manual_seed(0)
    emb = nn.Embedding(5000, 20, padding_idx=3)
    w = emb.weight.detach().numpy()
    assert not w[3].any()
    rest = np.delete(w, 3, axis=0)
    assert abs(rest.mean()) < 0.01 and abs(rest.std() - 1) < 0.01


def test_embedding_rejects_out_of_range_and_negative_indices():
    emb = nn.Embedding(4, 2)
    for bad in ([0, 4], [-1, 0]):
        with pytest.raises(IndexError, match="out of range"):
            emb(dg.tensor(bad))
    with pytest.raises(TypeError, match="integers"):
        emb(dg.tensor([0.0, 1.0]))


def test_linear_float32_matches_pytorch(torch):
    theirs = torch.nn.Linear(6, 4)
    ours = nn.Linear(6, 4)
    ours.load_state_dict(theirs.state_dict())  # PyTorch tensors load directly (CPU, detached)
    x = rng().standard_normal((3, 6)).astype(np.float32)
    out = ours(dg.tensor(x))
    assert out.dtype == dg.float32
    close(out, theirs(torch.tensor(x)), rtol=1e-5, atol=1e-6)


def test_linear_refuses_mixed_dtypes_like_pytorch():
    with pytest.raises(RuntimeError, match="input dtype float64 does not match weight dtype float32"):
        nn.Linear(3, 2)(dg.tensor(np.ones((1, 3))))


def test_torch_style_script_runs_unchanged():
    import ddpgrad as torch  # noqa: PLC0415 - the point: a PyTorch script with one import swapped
    import ddpgrad.nn as nn  # noqa: PLC0415

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Dropout(0.1), nn.Linear(16, 3))

        def forward(self, x):
            return self.body(x)

    torch.manual_seed(0)
    model = Classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
    assert losses[-1] < 0.5 * losses[0] and accuracy > 0.9


def test_layernorm_rejects_wrong_trailing_shape():
    with pytest.raises(RuntimeError, match=r"expected input with shape \[\*, 5\], but got input of size\[3, 4\]"):
        nn.LayerNorm(5)(dg.randn(3, 4))


# ============================================================================ losses vs PyTorch
def assert_loss_parity(torch, ours, theirs, x, target, target_grad=False, seed=5):
    xt, xo = torch.tensor(x, requires_grad=True), dg.tensor(x, requires_grad=True)
    tt, to = torch.tensor(target, requires_grad=target_grad), dg.tensor(target, requires_grad=target_grad)
    lt, lo = theirs(xt, tt), ours(xo, to)
    close(lo, lt)
    g = rng(seed).standard_normal(tuple(lt.shape))
    lt.backward(torch.tensor(g))
    lo.backward(dg.tensor(g))
    close(xo.grad, xt.grad)
    if target_grad:
        close(to.grad, tt.grad)


REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", ["MSELoss", "L1Loss"])
def test_regression_losses_match_pytorch(torch, loss, reduction):
    ours, theirs = twins(torch, lambda nn, T: getattr(nn, loss)(reduction=reduction))
    gen = rng(6)
    assert_loss_parity(torch, ours, theirs, gen.standard_normal((4, 3)), gen.standard_normal((4, 3)),
                       target_grad=True)


def test_mse_loss_warns_when_target_shape_broadcasts():
    with pytest.warns(UserWarning, match="different to the input size"):
        F.mse_loss(dg.randn(4, 1), dg.randn(4))


def _class_problem(shape, probabilities, ignore_index=-100, seed=7):
    """Logits of ``shape`` ((C,), (N, C) or (N, C, d...)) and matching targets."""
    gen = rng(seed)
    x = gen.standard_normal(shape)
    c = shape[0] if len(shape) == 1 else shape[1]
    if probabilities:
        p = gen.random(shape) + 0.05
        return x, p / p.sum(axis=0 if len(shape) == 1 else 1, keepdims=True)
    batch = () if len(shape) == 1 else (shape[0],) + shape[2:]
    target = gen.integers(0, c, size=batch)
    if batch:
        target.reshape(-1)[::4] = ignore_index  # some ignored positions
    return x, np.asarray(target)


CLASS_SHAPES = [(6, 4), (3, 4, 2, 3), (4,)]


@pytest.mark.parametrize("shape", CLASS_SHAPES, ids=["NC", "NCd1d2", "C"])
@pytest.mark.parametrize("probabilities", [False, True], ids=["indices", "probs"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_pytorch(torch, shape, probabilities, label_smoothing, weighted, reduction):
    c = shape[0] if len(shape) == 1 else shape[1]
    weight = rng(8).random(c) + 0.5 if weighted else None
    ours, theirs = twins(torch, lambda nn, T: nn.CrossEntropyLoss(
        weight=None if weight is None else T(weight), reduction=reduction, label_smoothing=label_smoothing))
    x, target = _class_problem(shape, probabilities)
    assert_loss_parity(torch, ours, theirs, x, target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_custom_ignore_index_matches_pytorch(torch, reduction):
    ours, theirs = twins(torch, lambda nn, T: nn.CrossEntropyLoss(ignore_index=1, reduction=reduction))
    x, target = _class_problem((8, 3), False, ignore_index=1)
    assert (target == 1).any()
    assert_loss_parity(torch, ours, theirs, x, target)


@pytest.mark.parametrize("shape", CLASS_SHAPES, ids=["NC", "NCd1d2", "C"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_pytorch(torch, shape, weighted, reduction):
    c = shape[0] if len(shape) == 1 else shape[1]
    weight = rng(9).random(c) + 0.5 if weighted else None
    ours, theirs = twins(torch, lambda nn, T: nn.NLLLoss(weight=None if weight is None else T(weight),
                                                        reduction=reduction))
    x, target = _class_problem(shape, False)
    assert_loss_parity(torch, ours, theirs, x, target)


@pytest.mark.parametrize("weight_shape", [None, (4, 3), (3,)])
@pytest.mark.parametrize("pos_weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_pytorch(torch, weight_shape, pos_weighted, reduction):
    gen = rng(10)
    weight = None if weight_shape is None else gen.random(weight_shape) + 0.5
    pos_weight = gen.random(3) + 0.5 if pos_weighted else None
    ours, theirs = twins(torch, lambda nn, T: nn.BCEWithLogitsLoss(
        weight=None if weight is None else T(weight), reduction=reduction,
        pos_weight=None if pos_weight is None else T(pos_weight)))
    x = 3 * gen.standard_normal((4, 3))
    assert_loss_parity(torch, ours, theirs, x, gen.random((4, 3)), target_grad=True)


def test_loss_weights_are_buffers_in_state_dict_like_pytorch(torch):
    for build in (lambda nn, T: nn.CrossEntropyLoss(weight=T([1.0, 2.0])),
                  lambda nn, T: nn.NLLLoss(weight=T([1.0, 2.0])),
                  lambda nn, T: nn.BCEWithLogitsLoss(pos_weight=T([3.0])),
                  lambda nn, T: nn.CrossEntropyLoss()):
        ours, theirs = twins(torch, build)
        assert list(ours.state_dict()) == list(theirs.state_dict())


def test_cross_entropy_out_of_range_label_says_which():
    x = dg.randn(3, 4, 2)
    target = dg.tensor([[0, 1], [2, 4], [3, 3]])
    with pytest.raises(IndexError, match=r"target 4 .* out of range for 4 classes"):
        nn.CrossEntropyLoss()(x, target)
    with pytest.raises(IndexError, match="target -3"):
        F.cross_entropy(dg.randn(2, 4), dg.tensor([0, -3]))
    with pytest.raises(IndexError, match="target 9"):
        nn.NLLLoss()(dg.randn(2, 4), dg.tensor([9, 0]))


def test_cross_entropy_rejects_float_labels_and_wrong_target_shapes():
    with pytest.raises(RuntimeError, match="integer dtype"):
        F.cross_entropy(dg.randn(3, 4), dg.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(RuntimeError, match="integer dtype"):
        F.cross_entropy(dg.randn(3, 4, 5), dg.tensor(np.zeros((3, 5))))
    with pytest.raises(RuntimeError, match=r"expected target of shape \[3, 5\]"):
        F.cross_entropy(dg.randn(3, 4, 5), dg.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer dtype"):
        F.cross_entropy(dg.randn(2, 4), dg.tensor([True, False]))
    with pytest.raises(ValueError, match="same as input size"):
        F.binary_cross_entropy_with_logits(dg.randn(3, 1), dg.rand(3))
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="average")


# ============================================================================ functional extras
def test_one_hot_matches_pytorch(torch):
    labels = np.array([[0, 2], [3, 1]])
    assert np.array_equal(F.one_hot(dg.tensor(labels)).numpy(), torch.nn.functional.one_hot(torch.tensor(labels)).numpy())
    out = F.one_hot(dg.tensor([1, 0]), num_classes=5)
    assert out.dtype == dg.int64 and out.shape == (2, 5)
    with pytest.raises(RuntimeError, match="smaller than num_classes"):
        F.one_hot(dg.tensor([5]), num_classes=5)
    with pytest.raises(RuntimeError, match="non-negative"):
        F.one_hot(dg.tensor([-1]), num_classes=5)


def test_softmax_without_dim_warns_and_picks_pytorch_default(torch):
    x = rng().standard_normal((3, 4))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        ours = F.softmax(dg.tensor(x))
    close(ours, torch.softmax(torch.tensor(x), dim=1))


def test_functional_linear_matches_pytorch(torch):
    gen = rng(11)
    x, w, b = gen.standard_normal((4, 3)), gen.standard_normal((2, 3)), gen.standard_normal(2)
    close(F.linear(dg.tensor(x), dg.tensor(w), dg.tensor(b)),
          torch.nn.functional.linear(torch.tensor(x), torch.tensor(w), torch.tensor(b)))
    close(F.linear(dg.tensor(x), dg.tensor(w)), torch.tensor(x) @ torch.tensor(w).T)


# ============================================================================ Dropout
def test_dropout_zeroes_about_p_and_scales_the_rest():
    dg.manual_seed(1)
    p = 0.3
    x = dg.ones(400, 500, requires_grad=True)
    y = nn.Dropout(p)(x)
    out = y.detach().numpy()
    zero_fraction = (out == 0).mean()
    sigma = math.sqrt(p * (1 - p) / out.size)
    assert abs(zero_fraction - p) < 5 * sigma
    np.testing.assert_allclose(out[out != 0], 1 / (1 - p), rtol=1e-6)
    y.sum().backward()
    assert np.array_equal(x.grad.numpy(), out)  # the gradient is the same scaled mask


def test_dropout_is_reproducible_under_manual_seed():
    x = dg.ones(64, 64)
    dg.manual_seed(123)
    a = F.dropout(x, 0.5).numpy().copy()
    b = F.dropout(x, 0.5).numpy().copy()
    dg.manual_seed(123)
    c = F.dropout(x, 0.5).numpy()
    assert np.array_equal(a, c) and not np.array_equal(a, b)


def test_dropout_eval_p0_and_p1():
    x = dg.randn(5, 6, requires_grad=True)
    layer = nn.Dropout(0.4)
    layer.eval()
    assert np.array_equal(layer(x).detach().numpy(), x.detach().numpy())
    assert F.dropout(x, 0.9, training=False) is x
    assert F.dropout(x, 0.0) is x
    y = F.dropout(x, 1.0)
    assert not y.detach().numpy().any()
    y.sum().backward()
    assert not x.grad.numpy().any()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            nn.Dropout(bad)


# ============================================================================ init
def _ks_uniform(values, bound):
    """Kolmogorov-Smirnov distance between ``values`` and U(-bound, bound)."""
    v = np.sort(values.ravel())
    cdf = (v + bound) / (2 * bound)
    n = v.size
    return max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max())


@pytest.mark.parametrize("in_features,out_features", [(400, 300), (3, 20000)])
def test_linear_default_init_is_pytorchs_uniform(torch, in_features, out_features):
    dg.manual_seed(0)
    layer = nn.Linear(in_features, out_features)
    bound = 1 / math.sqrt(in_features)
    for p in (layer.weight, layer.bias):
        v = p.detach().numpy().astype(np.float64)
        assert p.dtype == dg.float32
        assert np.abs(v).max() <= bound * (1 + 1e-6)
        assert v.max() > bound * (1 - 50 / v.size) and v.min() < -bound * (1 - 50 / v.size)
        assert _ks_uniform(v, bound) < 1.95 / math.sqrt(v.size)  # 0.1% level
        assert abs(v.mean()) < 4 * bound / math.sqrt(3 * v.size)
        assert abs(v.var() / (bound**2 / 3) - 1) < 5 * math.sqrt(0.8 / v.size)  # sd of a uniform's sample variance
    # PyTorch's own layer lies within the same bound and fills it just as well
    theirs = torch.nn.Linear(in_features, out_features)
    for p in (theirs.weight, theirs.bias):
        t = np.abs(p.detach().numpy())
        assert t.max() <= bound * (1 + 1e-6) and t.max() > bound * (1 - 50 / t.size)


def test_init_is_reproducible_under_manual_seed():
    dg.manual_seed(42)
    a = nn.Linear(4, 3).state_dict()
    dg.manual_seed(42)
    b = nn.Linear(4, 3).state_dict()
    c = nn.Linear(4, 3).state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert not np.array_equal(a["weight"].numpy(), c["weight"].numpy())


def test_calculate_gain_and_fans_match_pytorch(torch):
    cases = [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
             ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None)]
    for name, param in cases:
        assert nn.init.calculate_gain(name, param) == torch.nn.init.calculate_gain(name, param)
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        nn.init.calculate_gain("swish")
    for shape in [(3, 4), (5, 3, 2, 7)]:
        assert nn.init._calculate_fan_in_and_fan_out(dg.empty(*shape)) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.kaiming_uniform_(dg.empty(3))


@pytest.mark.parametrize("fn,kwargs,kind,scale", [
    ("kaiming_uniform_", {}, "uniform", math.sqrt(6 / 200)),  # a=0: leaky_relu with slope 0
    ("kaiming_uniform_", {"a": math.sqrt(5)}, "uniform", 1 / math.sqrt(200)),  # Linear's default
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}, "uniform", math.sqrt(6 / 300)),
    ("kaiming_normal_", {"nonlinearity": "relu"}, "normal", math.sqrt(2 / 200)),
    ("xavier_uniform_", {"gain": 2.0}, "uniform", 2 * math.sqrt(6 / 500)),
    ("xavier_normal_", {}, "normal", math.sqrt(2 / 500)),
    ("uniform_", {"a": -0.5, "b": 0.5}, "uniform", 0.5),
    ("normal_", {"mean": 0.0, "std": 0.3}, "normal", 0.3),
])
def test_init_functions_draw_from_the_documented_distribution(fn, kwargs, kind, scale):
    w = dg.empty(300, 200, dtype=dg.float64, requires_grad=True)
    array = w._data
    assert getattr(nn.init, fn)(w, **kwargs) is w
    assert w._data is array  # in place
    v = w.detach().numpy()
    if kind == "uniform":
        assert np.abs(v).max() <= scale and _ks_uniform(v, scale) < 1.95 / math.sqrt(v.size)
    else:
        assert abs(v.std() / scale - 1) < 0.01 and abs(v.mean()) < 4 * scale / math.sqrt(v.size)


def test_constant_inits():
    w = dg.empty(3, 2, requires_grad=True)
    assert np.all(nn.init.ones_(w).detach().numpy() == 1)
    assert np.all(nn.init.zeros_(w).detach().numpy() == 0)
    assert np.all(nn.init.constant_(w, 2.5).detach().numpy() == 2.5)
    assert w.requires_grad and w.grad_fn is None


# ============================================================================ Module mechanics
def build_net(nn, T):
    """A model touching every container and registration path, buildable with either library."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(6)
            self.proj = nn.Linear(6, 6)
            self.register_buffer("scale", T([2.0]))
            self.register_buffer("cache", T([0.0]), persistent=False)
            self.register_buffer("steps", T(np.array([0])))

        def forward(self, x):
            return self.proj(self.norm(x)) * self.scale

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 6, padding_idx=0)
            self.blocks = nn.ModuleList([Block(), Block()])
            self.heads = nn.ModuleDict({"cls": nn.Linear(6, 3), "reg": nn.Sequential(nn.Linear(6, 4), nn.ReLU(),
                                                                                       nn.Linear(4, 1))})
            self.drop = nn.Dropout(0.1)
            self.extra = nn.Parameter(T(np.ones(3)))

        def forward(self, idx):
            h = self.embed(idx)
            for block in self.blocks:
                h = h + block(h)
            h = self.drop(h)
            return self.heads["cls"](h) * self.extra + self.heads["reg"](h)

    return Net()


def test_state_dict_keys_and_names_match_pytorch(torch):
    ours, theirs = twins(torch, build_net)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [n for n, _ in ours.blocks.named_parameters(prefix="b")] == \
        [n for n, _ in theirs.blocks.named_parameters(prefix="b")]
    assert [n for n, _ in ours.named_parameters(recurse=False)] == ["extra"]
    visited, their_visited = [], []
    ours.apply(lambda m: visited.append(type(m).__name__))
    theirs.apply(lambda m: their_visited.append(type(m).__name__))
    assert visited == their_visited


def test_whole_model_forward_backward_matches_pytorch(torch):
    ours, theirs = twins(torch, build_net)
    ours.eval(), theirs.eval()
    idx = np.array([[1, 0, 4], [9, 2, 2]])
    assert_layer_parity(torch, ours, theirs, idx, input_grad=False)


def test_state_dict_shares_memory_and_is_detached():
    model = nn.Sequential(nn.Linear(3, 2))
    sd = model.state_dict()
    assert isinstance(sd, collections.OrderedDict)
    assert not sd["0.weight"].requires_grad and sd["0.weight"].grad_fn is None
    assert not isinstance(sd["0.weight"], nn.Parameter)
    assert sd["0.weight"]._data is model[0].weight._data
    assert list(model.state_dict(keep_vars=True).values())[0] is model[0].weight


@pytest.mark.parametrize("source", ["tensors", "numpy", "pytorch_numpy"])
def test_load_state_dict_round_trip_copies_in_place(torch, source):
    ours, theirs = twins(torch, build_net)
    if source == "pytorch_numpy":
        sd = {k: v.numpy().copy() for k, v in theirs.state_dict().items()}
        nn.init.zeros_(ours.heads["cls"].weight)  # make sure loading changes something
    else:
        donor = build_net(nn, lambda a: dg.tensor(np.asarray(a))).double()
        sd = donor.state_dict()
        sd = {k: v.numpy().copy() for k, v in sd.items()} if source == "numpy" else sd
    params = {n: (p, p._data) for n, p in ours.named_parameters()}
    buffers = {n: (b, b._data) for n, b in ours.named_buffers()}
    assert repr(ours.load_state_dict(sd)) == "<All keys matched successfully>"
    for name, (p, array) in params.items():
        assert ours.get_submodule(name.rpartition(".")[0])._parameters[name.rpartition(".")[2]] is p
        assert p._data is array and p.requires_grad
    for name, (b, array) in buffers.items():
        assert b._data is array
    for key, value in ours.state_dict().items():
        expected = sd[key].numpy() if isinstance(sd[key], dg.Tensor) else sd[key]
        assert np.array_equal(value.numpy(), expected), key
        assert value._data is not getattr(sd[key], "_data", sd[key])  # a copy, not the source's array


def test_load_state_dict_casts_into_the_parameters_dtype():
    model = nn.Linear(2, 2)
    model.load_state_dict({"weight": np.full((2, 2), 0.5), "bias": np.zeros(2, dtype=np.float64)})
    assert model.weight.dtype == dg.float32 and np.all(model.weight.detach().numpy() == 0.5)


def test_load_state_dict_strict_error_lists_every_problem_like_pytorch(torch):
    ours, theirs = twins(torch, build_net)
    bad = {k: v.numpy() for k, v in theirs.state_dict().items()}
    del bad["blocks.0.proj.bias"], bad["heads.reg.2.weight"]
    bad["blocks.1.norm.weight"] = np.ones(7)
    bad["extra"] = np.ones((3, 1))
    bad["unknown.weight"] = np.ones(1)
    bad["stray"] = np.ones(1)
    before = {k: v.numpy().copy() for k, v in ours.state_dict().items()}
    with pytest.raises(RuntimeError) as ours_err:
        ours.load_state_dict(bad)
    with pytest.raises(RuntimeError) as theirs_err:
        theirs.load_state_dict({k: torch.tensor(v) for k, v in bad.items()})
    assert str(ours_err.value) == str(theirs_err.value).replace("torch.Size", "ddpgrad.Size")
    for needle in ('"blocks.0.proj.bias"', '"heads.reg.2.weight"', '"unknown.weight"', '"stray"',
                   "size mismatch for blocks.1.norm.weight", "size mismatch for extra"):
        assert needle in str(ours_err.value)
    # nothing was copied: a failed load leaves the model as it was
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in ours.state_dict().items())


def test_load_state_dict_non_strict_reports_keys_like_pytorch(torch):
    ours, theirs = twins(torch, lambda nn, T: nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)))
    sd = {"0.weight": np.ones((3, 2)), "zz": np.ones(1)}
    result = ours.load_state_dict(sd, strict=False)
    expected = theirs.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=False)
    assert result.missing_keys == expected.missing_keys == ["0.bias", "1.weight", "1.bias"]
    assert result.unexpected_keys == expected.unexpected_keys == ["zz"]
    assert np.all(ours[0].weight.detach().numpy() == 1)
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        ours.load_state_dict({"0.weight": np.ones((2, 2))}, strict=False)


def test_load_state_dict_hints_at_ddp_prefix():
    model = nn.Linear(2, 2)
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="DistributedDataParallel"):
        model.load_state_dict(sd)


def test_repr_matches_pytorch(torch):
    def build(nn, T):
        return nn.Sequential(
            nn.Linear(10, 20), nn.ReLU(), nn.Dropout(0.25), nn.Linear(20, 1, bias=False), nn.GELU("tanh"),
            nn.LayerNorm((2, 3), elementwise_affine=False), nn.Embedding(10, 3, padding_idx=0),
            nn.Softmax(dim=-1), nn.LogSoftmax(1), nn.Flatten(), nn.Identity(), nn.Tanh(), nn.Sigmoid(),
            nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)]),
            nn.ModuleDict({"a": nn.ReLU(inplace=True), "b": nn.Sequential()}),
            nn.MSELoss(), nn.L1Loss(), nn.CrossEntropyLoss(), nn.NLLLoss(), nn.BCEWithLogitsLoss(),
            nn.ModuleList())

    ours, theirs = build(nn, None), build(torch.nn, None)
    assert repr(ours) == repr(theirs)
    assert repr(build_net(nn, dg.tensor)) == repr(build_net(torch.nn, torch.tensor))


def test_parameter_is_a_tensor_with_pytorchs_repr(torch):
    p = nn.Parameter(dg.tensor([1.0, 2.0]))
    assert isinstance(p, dg.Tensor) and p.requires_grad and p.is_leaf
    assert repr(p) == repr(torch.nn.Parameter(torch.tensor([1.0, 2.0])))
    t = dg.zeros(3)
    shared = nn.Parameter(t)
    shared.data.fill_(1.0)
    assert t.numpy().sum() == 3  # shares the tensor's memory, like PyTorch
    assert not nn.Parameter(dg.zeros(2), requires_grad=False).requires_grad
    assert type(p * 2) is dg.Tensor and type(p.detach()) is dg.Tensor


def test_registration_rules():
    m = nn.Module()
    m.w = nn.Parameter(dg.ones(2))
    m.sub = nn.Linear(2, 2)
    m.register_buffer("b", dg.zeros(1))
    m.plain = dg.ones(1)  # a plain tensor attribute is not registered
    assert [n for n, _ in m.named_parameters()] == ["w", "sub.weight", "sub.bias"]
    assert list(m.state_dict()) == ["w", "b", "sub.weight", "sub.bias"]
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'w'"):
        m.w = dg.ones(2)
    with pytest.raises(TypeError, match="buffer"):
        m.b = 3
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("plain", dg.ones(1))
    with pytest.raises(KeyError, match="contain"):
        m.register_parameter("a.b", None)
    with pytest.raises(TypeError, match=r"did you mean ReLU\(\)"):
        nn.Sequential(nn.ReLU)
    with pytest.raises(ValueError, match="non-leaf"):
        m.register_parameter("q", _non_leaf_parameter())
    m.w = None
    assert "w" not in dict(m.named_parameters())
    m.b = dg.ones(3)
    assert m.b.shape == (3,) and "b" in m.state_dict()
    del m.sub
    assert [n for n, _ in m.named_parameters()] == []
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        m.nothing  # noqa: B018

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(dg.ones(1))

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\)"):
        Early()


def _non_leaf_parameter():
    p = nn.Parameter(dg.ones(1))
    out = p * 2
    out.__class__ = nn.Parameter  # a Parameter that is the result of an op
    return out


def test_reassigning_a_parameter_keeps_its_position():
    layer = nn.Linear(2, 2)
    layer.weight = nn.Parameter(dg.zeros(2, 2))
    assert list(layer.state_dict()) == ["weight", "bias"]


def test_shared_parameters_are_listed_once_but_saved_under_every_name(torch):
    def build(nn, T):
        a = nn.Linear(3, 3)
        return nn.Sequential(a, nn.ReLU(), a)

    ours, theirs = twins(torch, build)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()] == ["0.weight", "0.bias"]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert len(list(ours.modules())) == len(list(theirs.modules())) == 3
    assert_layer_parity(torch, ours, theirs, rng().standard_normal((2, 3)))


def test_tied_weights_across_modules_are_listed_once_like_pytorch(torch):
    def build(nn, T):
        model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
        model[1].weight = model[0].weight  # weight tying, as in language models
        return model

    ours, theirs = twins(torch, build)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()] == ["0.weight"]
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["0.weight", "1.weight"]
    assert ours[1].weight is ours[0].weight
    assert_layer_parity(torch, ours, theirs, np.array([[0, 4, 2]]), input_grad=False)


def test_forward_hooks_can_change_inputs_and_outputs_and_be_removed():
    layer = nn.Linear(2, 2)
    seen = []
    pre = layer.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    post = layer.register_forward_hook(lambda m, args, out: seen.append(out.shape) or out + 1)
    out = layer(dg.ones(4, 2))
    expected = layer.bias.detach().numpy() + 1
    np.testing.assert_allclose(out.detach().numpy(), np.broadcast_to(expected, (4, 2)), rtol=1e-6)
    assert seen == [(4, 2)]
    pre.remove()
    post.remove()
    assert np.allclose(layer(dg.ones(1, 2)).detach().numpy(),
                       layer.weight.detach().numpy().sum(1) + layer.bias.detach().numpy())
    assert seen == [(4, 2)]


def test_train_eval_propagate():
    model = build_net(nn, dg.tensor)
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="boolean"):
        model.train("no")


def test_zero_grad_drops_or_zeroes_in_place():
    model = nn.Linear(3, 2)
    model(dg.ones(1, 3)).sum().backward()
    grad = model.weight.grad
    array = grad._data
    model.zero_grad(set_to_none=False)
    assert model.weight.grad is grad and grad._data is array and not array.any()
    model.zero_grad()
    assert model.weight.grad is None and model.bias.grad is None


def test_requires_grad_(torch):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    assert model.requires_grad_(False) is model
    assert not any(p.requires_grad for p in model.parameters())
    model[1].requires_grad_()
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]


def test_to_converts_in_place_and_keeps_parameter_objects():
    model = build_net(nn, dg.tensor)
    model(dg.tensor([[1, 2]])).sum().backward()
    params = list(model.parameters())
    assert model.to(dg.float64) is model
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert all(p.dtype == dg.float64 for p in model.parameters())
    assert all(p.grad.dtype == dg.float64 for p in model.parameters())
    assert model.blocks[0].scale.dtype == dg.float64
    assert model.blocks[0].steps.dtype == dg.int64  # integer buffers keep their dtype
    model.float()
    assert all(p.dtype == dg.float32 for p in model.parameters())
    model.double().to("cpu")
    model.to(device="cpu", dtype=dg.float32)
    assert all(p.dtype == dg.float32 for p in model.parameters())
    model.to(dg.zeros(1, dtype=dg.float64))
    assert all(p.dtype == dg.float64 for p in model.parameters())
    out = model(dg.tensor([[3, 4]]))
    assert out.dtype == dg.float64
    with pytest.raises(TypeError, match="floating point"):
        model.to(dg.int64)


def test_sequential_and_module_list_behave_like_lists():
    layers = [nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers and seq[-1] is layers[2]
    head = seq[:2]
    assert type(head) is nn.Sequential and list(head) == layers[:2]
    seq.append(nn.Sigmoid())
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear", "Sigmoid"]
    del seq[1]
    assert list(seq._modules) == ["0", "1", "2"] and seq[1] is layers[2]
    seq.insert(1, nn.Tanh())
    assert [type(m).__name__ for m in seq] == ["Linear", "Tanh", "Linear", "Sigmoid"]
    seq[0] = nn.Identity()
    assert type(seq[0]) is nn.Identity
    with pytest.raises(IndexError, match="out of range"):
        seq[10]  # noqa: B018
    named = nn.Sequential(collections.OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"] and named.act is named[1]

    ml = nn.ModuleList([nn.Linear(2, 2)])
    ml += [nn.ReLU()]
    ml.extend([nn.Tanh()])
    assert len(ml) == 3 and type(ml[1:]) is nn.ModuleList and len(ml[1:]) == 2
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias"]
    md = nn.ModuleDict({"a": nn.Linear(1, 1)})
    md["b"] = nn.ReLU()
    assert list(md) == ["a", "b"] and "a" in md and len(md) == 2
    assert md.pop("a").__class__ is nn.Linear and list(md.keys()) == ["b"]


def test_deepcopy_gives_an_independent_equal_model():
    model = build_net(nn, dg.tensor)
    clone = copy.deepcopy(model)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), clone.named_parameters()):
        assert n1 == n2 and p1 is not p2 and isinstance(p2, nn.Parameter) and p2.requires_grad
        assert np.array_equal(p1.detach().numpy(), p2.detach().numpy())
        assert not np.shares_memory(p1._data, p2._data)


def test_module_without_forward_says_so():
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        nn.Module()(1)


# ============================================================================ gradient clipping
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_pytorch(torch, norm_type, max_norm):
    ours, theirs = twins(torch, lambda nn, T: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)))
    x = rng(12).standard_normal((6, 4))
    ours(dg.tensor(x)).sum().backward()
    theirs(torch.tensor(x)).sum().backward()
    arrays = [p.grad._data for p in ours.parameters()]
    total = nn.utils.clip_grad_norm_(ours.parameters(), max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm, norm_type)
    close(total, expected)
    for p, q, array in zip(ours.parameters(), theirs.parameters(), arrays):
        close(p.grad, q.grad)
        assert p.grad._data is array  # scaled in place


def test_clip_grad_norm_nonfinite_and_empty():
    p = nn.Parameter(dg.ones(2))
    assert nn.utils.clip_grad_norm_([p], 1.0).item() == 0.0
    p.grad = dg.tensor([float("inf"), 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)


def test_clip_grad_value_matches_pytorch(torch):
    g = rng(13).standard_normal((3, 4))
    p, q = nn.Parameter(dg.zeros(3, 4, dtype=dg.float64)), torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    p.grad, q.grad = dg.tensor(g), torch.tensor(g)
    nn.utils.clip_grad_value_([p], 0.5)
    torch.nn.utils.clip_grad_value_([q], 0.5)
    close(p.grad, q.grad)


def test_parameters_to_vector_and_back():
    model = nn.Linear(3, 2)
    vec = nn.utils.parameters_to_vector(model.parameters())
    assert vec.shape == (8,)
    arrays = [p._data for p in model.parameters()]
    nn.utils.vector_to_parameters(dg.arange(8, dtype=dg.float32), model.parameters())
    assert model.weight.detach().numpy().ravel().tolist() == [0, 1, 2, 3, 4, 5]
    assert all(p._data is a for p, a in zip(model.parameters(), arrays))
