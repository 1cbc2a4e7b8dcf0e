"""UniformDropout: the mask fairseq's dropout draws (keep with probability 1 - p, scaled
by 1 / (1 - p)), drawn from uniform numbers; the model uses it in every layer."""
import torch
import torch.nn.functional as F
from fairseq.modules import FairseqDropout

from ofasys_fairseq.models.dropout import UniformDropout, use_uniform_dropout

from .test_ofasys_model import build, data_dir  # noqa: F401  (fixture)


def test_keeps_each_value_with_probability_one_minus_p_and_rescales():
    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 1.0  # no zeros of its own
    p = 0.3
    y = UniformDropout(p).train()(x)
    kept = y.ne(0)
    assert abs(kept.float().mean().item() - (1 - p)) < 0.002  # 1e6 draws: sd 0.0005
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    # as F.dropout: the expectation is unchanged
    reference = F.dropout(x, p, training=True)
    assert abs(y.mean().item() - reference.mean().item()) < 0.01


def test_gradient_is_the_scaled_mask():
    torch.manual_seed(0)
    x = torch.randn(50, 40, requires_grad=True)
    y = UniformDropout(0.5).train()(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.ne(0).float() * 2.0)


def test_inplace_and_evaluation():
    dropout = UniformDropout(0.5, module_name="layer")
    x = torch.ones(10, 10)
    assert dropout.eval()(x) is x  # evaluation: identity
    dropout.make_generation_fast_("layer", retain_dropout=True)  # fairseq's option
    assert dropout(x).eq(0).any()
    y = torch.ones(10, 10)
    dropout.train()(y, inplace=True)
    assert y.eq(0).any() and set(y.unique().tolist()) <= {0.0, 2.0}


def test_model_layers_use_it_with_their_settings(data_dir):  # noqa: F811
    _, model = build(data_dir, "ofasys_tiny", "--dropout", "0.2", "--activation-dropout", "0.05")
    dropouts = [m for m in model.modules() if isinstance(m, FairseqDropout)]
    assert dropouts and all(type(m) is UniformDropout for m in dropouts)
    layer = model.encoder.layers[0]
    assert layer.dropout_module.p == 0.2 and layer.activation_dropout_module.p == 0.05
    assert model.decoder.dropout_module.p == 0.2


def test_replacing_keeps_names_and_is_idempotent():
    module = torch.nn.Sequential(FairseqDropout(0.1, module_name="a"), torch.nn.Linear(2, 2))
    names = [n for n, _ in module.named_modules()]
    use_uniform_dropout(use_uniform_dropout(module))
    assert [n for n, _ in module.named_modules()] == names
    assert type(module[0]) is UniformDropout and module[0].module_name == "a"


def test_p_one_drops_everything_as_fairseq_does():
    x = torch.ones(4, 4, requires_grad=True)
    assert UniformDropout(1.0).train()(x).eq(0).all()
