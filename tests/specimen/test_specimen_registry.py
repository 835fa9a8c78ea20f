"""Specimen configs and the defect-class registry."""

import math

import numpy as np
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from stemjax.specimen import (
    DefectRegistry,
    SpecimenConfig,
    available_materials,
    conf_dir,
    load_specimen_config,
    prior_tables,
    unit_cell,
)

YAMLS = sorted((conf_dir() / "specimen").glob("*.yaml"))
FIELD_ANGSTROM = 256 * 0.2074  # training image size


def _write_variant(tmp_path, edit):
    """Copy wse2te.yaml with `edit(dict)` applied; return the new path."""
    data = OmegaConf.to_container(OmegaConf.load(conf_dir() / "specimen" / "wse2te.yaml"))
    edit(data)
    path = tmp_path / "variant.yaml"
    OmegaConf.save(OmegaConf.create(data), path)
    return path


def test_required_materials_present():
    assert {"wse2te", "mos2se", "ws2"} <= set(available_materials())


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_every_yaml_fits_schema(path):
    cfg = OmegaConf.merge(OmegaConf.structured(SpecimenConfig), OmegaConf.load(path))
    assert cfg.name == path.stem
    loaded = load_specimen_config(path.stem)
    assert isinstance(loaded, SpecimenConfig)
    assert {"train", "eval"} <= set(loaded.priors)
    reg = DefectRegistry.from_config(loaded)
    assert reg.names[0] == "none" and reg.num_classes == len(loaded.defects) + 1


def test_wse2te_registry_ids_names_sublattices():
    reg = DefectRegistry.from_config(load_specimen_config("wse2te"))
    assert reg.names == ("none", "2Te", "SeTe", "SV", "DV", "2TeW", "SeW", "VW")
    assert reg.num_classes == len(reg) == 8
    assert reg.id("VW") == 7 and reg.name(3) == "SV" and reg["DV"].id == 4
    assert reg.ids_on("chalcogen") == (1, 2, 3, 4)
    assert reg.ids_on("metal") == (5, 6, 7)
    assert reg.sublattice("2TeW") == "metal" and reg.sublattice(0) is None
    np.testing.assert_array_equal(reg.sublattice_ids(), [-1, 1, 1, 1, 1, 0, 0, 0])
    names = reg.sublattice_names()
    assert names[0] is None and names[np.array([1, 5])].tolist() == ["chalcogen", "metal"]
    hash(reg)  # usable as static jit metadata
    with pytest.raises(ValueError, match=r"'Te2'.*known.*'2Te'"):
        reg.id("Te2")
    with pytest.raises(ValueError, match="out of range"):
        reg[8]


def test_wse2te_eval_prior_matches_published_rates():
    """10 % of columns defective; Te subs 87 %, Se vacancies 12 %, SeW 0.8 %, VW 0.08 %."""
    cfg = load_specimen_config("wse2te")
    reg = DefectRegistry.from_config(cfg)
    c = {n: cfg.priors["eval"].concentrations[n] for n in reg.defect_names}
    total = sum(c.values())  # defects per (metal site + chalcogen column); equal site counts
    assert total / 2 == pytest.approx(0.10, rel=1e-3)
    frac = {k: v / total for k, v in c.items()}
    assert frac["2Te"] + frac["SeTe"] == pytest.approx(0.87, rel=1e-3)
    assert frac["SV"] + frac["DV"] == pytest.approx(0.12, rel=1e-3)
    assert frac["SeW"] == pytest.approx(0.008, rel=1e-3)
    assert frac["VW"] == pytest.approx(0.0008, rel=1e-3)
    assert frac["2TeW"] < 0.002


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_train_prior_shows_every_class_in_a_training_field(path):
    cfg = load_specimen_config(path)
    sites = FIELD_ANGSTROM**2 / (math.sqrt(3) / 2 * cfg.a**2)  # per sublattice
    conc = cfg.priors["train"].concentrations
    reg = DefectRegistry.from_config(cfg)
    for name in reg.defect_names:
        assert conc.get(name, 0.0) * sites >= 5, name
        eval_conc = cfg.priors["eval"].concentrations.get(name, 0.0)
        if eval_conc * sites < 5:  # rare at realistic rates: must be oversampled
            assert conc[name] > eval_conc, name


def test_prior_tables_rows_are_distributions():
    cfg = load_specimen_config("wse2te")
    reg = DefectRegistry.from_config(cfg)
    for table in prior_tables(cfg, reg).values():
        np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-12)
        sub = reg.sublattice_ids()
        for s in range(2):
            assert np.all(table[s, (sub != s) & (sub >= 0)] == 0)


def test_unit_cell_geometry():
    cfg = load_specimen_config("wse2te")
    atoms = unit_cell(cfg)
    assert list(atoms.symbols) == ["W", "Se", "Se"]
    d = np.linalg.norm(atoms.positions[1, :2] - atoms.positions[0, :2])
    assert d == pytest.approx(3.297 / math.sqrt(3), abs=1e-6)
    np.testing.assert_allclose(atoms.positions[1:, 2], [1.67, -1.67])


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda d: d.update(lattice_constant=3.3), "lattice_constant"),
        (lambda d: d["sampling"].update(strain=0.01), "strain"),
        (lambda d: d["defects"][0].update(sublatice="metal"), "sublatice"),
        (lambda d: d["priors"]["train"].update(concentration={}), "concentration"),
    ],
)
def test_unknown_yaml_key_is_named(tmp_path, edit, key):
    path = _write_variant(tmp_path, edit)
    with pytest.raises(ConfigKeyError, match=key):
        load_specimen_config(path)
    with pytest.raises(ConfigKeyError, match=key):
        OmegaConf.merge(OmegaConf.structured(SpecimenConfig), OmegaConf.load(path))


def test_wrong_type_fails(tmp_path):
    path = _write_variant(tmp_path, lambda d: d.update(a="three"))
    with pytest.raises(ValidationError, match=r"three[\s\S]*full_key: a\b"):
        load_specimen_config(path)


def test_unknown_class_in_prior_names_file_field_and_known(tmp_path):
    path = _write_variant(
        tmp_path, lambda d: d["priors"]["eval"]["concentrations"].update(Te2=0.01)
    )
    with pytest.raises(ValueError) as err:
        load_specimen_config(path)
    msg = str(err.value)
    assert str(path) in msg and "priors.eval.concentrations.Te2" in msg
    assert all(n in msg for n in ("2Te", "SeTe", "SV", "DV", "2TeW", "SeW", "VW"))


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda d: d["priors"]["train"]["concentrations"].update(SeTe=0.95), "sum to"),
        (lambda d: d["priors"]["train"]["concentrations"].update(VW=-0.1), r"VW = -0.1"),
        (lambda d: d["defects"][1].update(name="2Te"), "duplicate"),
        (lambda d: d["defects"][1].update(name="none"), "reserved"),
        (lambda d: d["defects"][0].update(sublattice="boron"), "boron"),
        (lambda d: d["defects"][0]["content"].append({"element": "Te", "z": 0.0}), "at most"),
        (lambda d: d["defects"][0]["content"][0].update(element="Tx"), "Tx"),
        (lambda d: d["thermal_rms"].pop("Te"), r"thermal_rms lacks.*Te"),
    ],
)
def test_semantic_errors(tmp_path, edit, pattern):
    path = _write_variant(tmp_path, edit)
    with pytest.raises(ValueError, match=pattern):
        load_specimen_config(path)
