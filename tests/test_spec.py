"""ExportSpec rules, one test per rule; model-free and fast."""

import pytest

from exporter.errors import SpecError
from exporter.spec import AdapterSpec, ExportSpec, FidelitySpec, ModelSpec, QuantSpec


def test_defaults_are_embedded_int4_without_adapters():
    s = ExportSpec()
    assert (s.model.base, s.quant.scheme, s.adapters.strategy, s.format) == ("smollm2-135m", "int4", "none", "executorch")
    assert s.ops == ["extract", "update", "generate"]


def test_adapters_default_to_separate():
    assert AdapterSpec(paths={"extract": "x"}).strategy == "separate"


@pytest.mark.parametrize("scheme", ["int6", "INT4", ""])
def test_quant_scheme_choices(scheme):
    with pytest.raises(SpecError, match=r"quant.scheme must be one of \['int4', 'int8', 'fp32'\]"):
        QuantSpec(scheme=scheme)


@pytest.mark.parametrize("name", ["Extract", "1op", "ex-tract", "a" * 40, "op name"])
def test_op_name_format(name):
    with pytest.raises(SpecError, match="adapter op name must match"):
        AdapterSpec(paths={name: "x"})


def test_other_op_names_allowed():
    assert ExportSpec(adapters=AdapterSpec(paths={"summarize_v2": "x"})).ops == ["summarize_v2"]


def test_none_strategy_conflicts_with_adapters():
    with pytest.raises(SpecError, match="conflicts with adapters.paths"):
        AdapterSpec(paths={"extract": "x"}, strategy="none")


@pytest.mark.parametrize("strategy", ["merged", "separate"])
def test_strategies_need_adapters(strategy):
    with pytest.raises(SpecError, match="needs at least one adapter"):
        AdapterSpec(strategy=strategy)


def test_group_size_choices():
    with pytest.raises(SpecError, match="group_size"):
        QuantSpec(group_size=48)


def test_max_seq_len_bounds():
    with pytest.raises(SpecError, match="max_seq_len"):
        ModelSpec(max_seq_len=8)


def test_fidelity_tokens_must_fit_context():
    with pytest.raises(SpecError, match="fidelity.tokens"):
        ExportSpec(model=ModelSpec(max_seq_len=64), fidelity=FidelitySpec(tokens=64))


def test_round_trip_and_unknown_keys():
    s = ExportSpec(adapters=AdapterSpec(paths={"extract": "a"}, strategy="merged"), quant=QuantSpec("int8"))
    assert ExportSpec.from_dict(s.to_dict()) == s
    with pytest.raises(SpecError, match=r"unknown spec keys \['quantization'\]"):
        ExportSpec.from_dict({"quantization": {}})
    with pytest.raises(SpecError, match=r"unknown keys \['bits'\] in spec section 'quant'"):
        ExportSpec.from_dict({"quant": {"bits": 4}})
