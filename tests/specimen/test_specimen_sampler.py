"""Random specimen sampling: determinism, tracing, statistics, geometry, atom content.

Compilation dominates the run time on CPU, so tests share a few (layout, batch-size) variants.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.data import atomic_numbers

from stemjax.specimen import (
    PriorConfig,
    build_layout,
    load_specimen_config,
    sample_specimen,
    species_index,
    unit_cell,
)

BOX = (20.0, 17.0)  # Å, deliberately not square
MATERIALS = ("wse2te", "mos2se", "ws2")
B = 24  # standard batch
N_STAT = 1500  # samples for the frequency test (~170 sites per sublattice each)


def _cfg(name="wse2te", **sampling):
    cfg = load_specimen_config(name)
    return dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, **sampling))


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def _keys(seed, n=B):
    return jax.random.split(jax.random.key(seed), n)


def _batch_impl(keys, layout, prior):
    return jax.vmap(lambda k: sample_specimen(k, layout, prior))(keys)


_batch = jax.jit(_batch_impl, static_argnames="prior")  # eager vmap would compile op by op


_single = jax.jit(sample_specimen, static_argnames="prior")


@pytest.fixture(scope="module")
def layout():
    return build_layout(_cfg(), BOX)


@pytest.fixture(scope="module")
def batch(layout):
    return _np(_batch(_keys(0), layout, "train"))


@functools.cache
def _stat_samples(name):
    """N_STAT cold (no thermal) specimens per prior, both priors in one compile."""
    cfg = _cfg(name, thermal=False)
    lay = build_layout(cfg, BOX)
    both = jax.jit(lambda k: {p: _batch_impl(k, lay, p) for p in ("train", "eval")})
    return cfg, lay, _np(both(_keys(11, N_STAT)))


def test_shapes_dtypes(layout, batch):
    m, n = layout.num_sites, layout.num_atoms
    assert n == 2 * m
    expect = {
        "positions": ((n, 3), np.float32),
        "numbers": ((n,), np.int32),
        "mask": ((n,), np.bool_),
        "site_xy": ((m, 2), np.float32),
        "site_class": ((m,), np.int32),
        "site_sublattice": ((m,), np.int32),
        "site_valid": ((m,), np.bool_),
        "rotation_rad": ((), np.float32),
        "strain": ((2, 2), np.float32),
        "shift": ((2,), np.float32),
    }
    for field, (shape, dtype) in expect.items():
        arr = getattr(batch, field)
        assert arr.shape == (B, *shape) and arr.dtype == dtype, field


def test_same_key_same_specimen_different_key_different(layout, batch):
    again = _np(_batch(_keys(0), layout, "train"))
    for x, y in zip(jax.tree.leaves(batch), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(x, y)
    # different keys (within the batch) give different specimens
    assert len({batch.site_class[b].tobytes() for b in range(B)}) == B
    assert len({float(batch.rotation_rad[b]) for b in range(B)}) == B
    assert not np.allclose(batch.positions[0], batch.positions[1])


def test_jit_traces_once(layout):
    traces = []

    def fn(key):
        traces.append(1)
        return sample_specimen(key, layout, "eval")

    f = jax.jit(fn)
    out = [np.asarray(f(jax.random.key(i)).site_class) for i in range(4)]
    assert len(traces) == 1
    assert not np.array_equal(out[0], out[1])


def test_vmap_matches_single_and_stays_on_device(layout, batch):
    keys, dev_layout = _keys(0), jax.device_put(layout)
    with jax.transfer_guard("disallow"):
        on_device = _batch(keys, dev_layout, "train")
    np.testing.assert_array_equal(on_device.site_class, batch.site_class)
    single = _np(_single(keys[5], layout, "train"))
    np.testing.assert_array_equal(single.site_class, batch.site_class[5])
    np.testing.assert_allclose(single.positions, batch.positions[5], atol=1e-5)


def test_unknown_prior_raises(layout):
    with pytest.raises(ValueError, match=r"'realistic'.*'train', 'eval'"):
        sample_specimen(jax.random.key(0), layout, "realistic")


@pytest.mark.parametrize("name", MATERIALS)
def test_class_frequencies_match_prior(name):
    """Per-class counts over all sites of N_STAT samples within 4 binomial sigma of n p, for
    every class (pristine included) of both priors; classes of the other sublattice never."""
    cfg, lay, samples = _stat_samples(name)
    reg = lay.registry
    for prior, s in samples.items():
        cls, sub = s.site_class.ravel(), s.site_sublattice.ravel()
        conc = cfg.priors[prior].concentrations
        for si, sname in enumerate(reg.sublattices):
            on = cls[sub == si]
            counts = np.bincount(on, minlength=reg.num_classes)
            assert len(counts) == reg.num_classes
            p_defect = {c: conc.get(reg.name(c), 0.0) for c in reg.ids_on(sname)}
            expected = {0: 1.0 - sum(p_defect.values()), **p_defect}
            for c in range(reg.num_classes):
                p, n = expected.get(c, 0.0), on.size
                tol = 4.0 * math.sqrt(n * p * (1 - p))
                assert abs(counts[c] - n * p) <= tol, (prior, sname, reg.name(c), counts[c], n * p)


def _expected_content(cfg, class_id, sublattice):
    if class_id == 0:
        slots = cfg.metal if sublattice == "metal" else cfg.chalcogen
    else:
        slots = cfg.defects[class_id - 1].content
    return sorted((atomic_numbers[a.element], round(a.z, 4)) for a in slots)


@pytest.mark.parametrize("name", MATERIALS)
def test_atom_content_matches_class(name):
    """Masked atoms of every valid site are exactly its class's configured (element, z)."""
    cfg, lay, samples = _stat_samples(name)
    s, reg = samples["train"], lay.registry
    seen = set()
    for b in range(B):
        num = s.numbers[b].reshape(-1, 2)
        msk = s.mask[b].reshape(-1, 2)
        z = s.positions[b, :, 2].reshape(-1, 2)
        for m in np.flatnonzero(s.site_valid[b]):
            c, sl = int(s.site_class[b, m]), reg.sublattices[s.site_sublattice[b, m]]
            got = sorted((int(num[m, k]), round(float(z[m, k]), 4)) for k in range(2) if msk[m, k])
            assert got == _expected_content(cfg, c, sl), (reg.name(c), sl, got)
            seen.add(c)
        # atomic number 0 exactly where masked; masked atoms only on valid sites
        assert np.all((s.numbers[b] > 0) == s.mask[b])
        assert np.all(np.repeat(s.site_valid[b], 2)[s.mask[b]])
    assert seen == set(range(reg.num_classes))  # every class exercised
    # without thermal motion atoms sit exactly on their columns
    np.testing.assert_array_equal(s.positions[..., :2], np.repeat(s.site_xy, 2, axis=1))


def test_wse2te_named_defect_contents():
    _, lay, samples = _stat_samples("wse2te")
    s, reg = jax.tree.map(lambda x: x[:100], samples["train"]), lay.registry
    W, Se, Te = (atomic_numbers[e] for e in ("W", "Se", "Te"))
    num = np.sort(s.numbers.reshape(*s.site_class.shape, 2), axis=-1)  # 0 where masked
    valid, cls, sub = s.site_valid, s.site_class, s.site_sublattice

    def sites(name):
        sel = valid & (cls == reg.id(name))
        assert sel.any(), name
        assert np.all(sub[sel] == reg.sublattice_index(name))
        return num[sel]

    assert np.all(sites("DV") == 0) and np.all(sites("VW") == 0)
    assert np.all(sites("SV") == [0, Se]) and np.all(sites("SeW") == [0, Se])
    assert np.all(sites("2TeW") == [Te, Te]) and reg.sublattice("2TeW") == "metal"
    assert np.all(sites("SeTe") == [Se, Te]) and np.all(sites("2Te") == [Te, Te])
    pristine = valid & (cls == 0)
    assert np.all(num[pristine & (sub == 0)] == [0, W])
    assert np.all(num[pristine & (sub == 1)] == [Se, Se])


def _nearest(points, sites):
    d = np.linalg.norm(points[:, None, :] - sites[None, :, :], axis=-1)
    return d.min(axis=1)


def _grid(lo, hi_x, hi_y, n=36):
    gx, gy = np.meshgrid(np.linspace(lo, hi_x, n), np.linspace(lo, hi_y, n), indexing="ij")
    return np.stack([gx, gy], -1).reshape(-1, 2)


def _reference_sites(cfg, shift, theta, strain, lo, hi):
    """Brute force: a big 2H lattice through the documented map, sites inside [lo, hi)."""
    atoms = unit_cell(cfg)
    cell, basis = atoms.cell[:2, :2], atoms.positions[:2, :2]
    n = np.arange(-40, 41)
    lat = np.stack(np.meshgrid(n, n, indexing="ij"), -1).reshape(-1, 2) @ cell
    sites = (lat[None] + basis[:, None]).reshape(-1, 2)
    c, s = np.cos(theta), np.sin(theta)
    f = (np.eye(2) + strain) @ np.array([[c, -s], [s, c]])
    xy = (sites + shift) @ f.T + np.divide(BOX, 2)
    return xy[np.all((xy >= lo) & (xy < hi), axis=-1)]


@pytest.mark.parametrize("margin", [0.0, 3.0])
def test_box_inside_and_fully_covered(margin, layout, batch):
    """Every lattice site that lands in the box is present (vs. a brute-force lattice), valid
    sites are exactly those inside, and the labels leave no empty patch."""
    cfg = _cfg()
    if margin:
        layout = build_layout(cfg, BOX, margin_angstrom=margin)
        batch = _np(_batch(_keys(1), layout, "train"))
    lx, ly = BOX
    inner = _grid(1e-3, lx - 1e-3, ly - 1e-3)
    for b in range(B):
        xy, valid = batch.site_xy[b], batch.site_valid[b]
        inside = np.all((xy >= 0) & (xy < BOX), axis=-1)
        np.testing.assert_array_equal(valid, inside)
        kept = np.all((xy >= -margin) & (xy < np.add(BOX, margin)), axis=-1)
        ref = _reference_sites(
            cfg, batch.shift[b], batch.rotation_rad[b], batch.strain[b],
            -margin + 1e-3, np.add(BOX, margin - 1e-3),
        )  # fmt: skip
        assert len(ref) > 0 and _nearest(ref, xy[kept]).max() < 1e-3
        assert abs(kept.sum() - len(ref)) <= 2  # only sites within 1e-3 Å of an edge may differ
        # labels have no empty patch inside the box
        assert _nearest(inner, xy[valid]).max() < cfg.a
        expect_mask = np.repeat(kept, 2) & (batch.numbers[b] > 0)
        np.testing.assert_array_equal(batch.mask[b], expect_mask)


def test_strain_free_projected_distances_and_transform():
    cfg = _cfg("wse2te", strain_max=0.0, thermal=False, rotation_deg=[10.0, 20.0])
    lay = build_layout(cfg, BOX)
    batch = _np(_batch(_keys(2), lay, "eval"))
    a = cfg.a
    assert np.all((batch.rotation_rad >= np.deg2rad(10)) & (batch.rotation_rad < np.deg2rad(20)))
    np.testing.assert_array_equal(batch.strain, 0.0)
    for b in range(3):
        s = jax.tree.map(lambda x, b=b: x[b], batch)
        interior = np.all((s.site_xy > 1.2 * a) & (s.site_xy < np.subtract(BOX, 1.2 * a)), -1)
        metal = s.site_xy[interior & (s.site_sublattice == 0)]  # all neighbours in the layout
        assert len(metal) > 5
        chalc = s.site_xy[s.site_sublattice == 1]
        d = np.sort(np.linalg.norm(metal[:, None] - chalc[None], axis=-1), axis=1)
        np.testing.assert_allclose(d[:, :3], a / math.sqrt(3), atol=1e-4)  # 3 Se2 neighbours
        assert np.all(d[:, 3] > a / math.sqrt(3) * 1.5)
        all_metal = s.site_xy[s.site_sublattice == 0]
        dm = np.sort(np.linalg.norm(metal[:, None] - all_metal[None], axis=-1), axis=1)[:, 1:7]
        np.testing.assert_allclose(dm, a, atol=1e-4)  # 6 metal neighbours at a
        # documented map: x_box = centre + (I + eps) R(theta) (x_lat + shift)
        c, sn = np.cos(s.rotation_rad), np.sin(s.rotation_rad)
        expect = (lay.site_xy + s.shift) @ np.array([[c, -sn], [sn, c]]).T + np.divide(BOX, 2)
        np.testing.assert_allclose(s.site_xy, expect, atol=1e-4)
        # the shift stays within one unit cell
        uv = np.linalg.solve(lay.cell.T, s.shift)
        assert np.all((uv >= -1e-6) & (uv < 1 + 1e-6))


def test_strain_bounds(batch):
    e_max, r = 0.01, _cfg().a / math.sqrt(3)
    assert np.abs(batch.strain).max() <= e_max and np.abs(batch.strain).max() > 0.7 * e_max
    np.testing.assert_array_equal(batch.strain[:, 0, 1], batch.strain[:, 1, 0])
    for b in range(3):
        xy = batch.site_xy[b]
        interior = np.all((xy > 1.2 * r * 3**0.5) & (xy < np.subtract(BOX, 1.2 * r * 3**0.5)), -1)
        metal = xy[interior & (batch.site_sublattice[b] == 0)]
        chalc = batch.site_xy[b][batch.site_sublattice[b] == 1]
        d = np.sort(np.linalg.norm(metal[:, None] - chalc[None], axis=-1), axis=1)[:, :3]
        assert np.all((d > r * (1 - 2 * e_max)) & (d < r * (1 + 2 * e_max)))
        assert np.all(d[:, 2] - d[:, 0] > 1e-4)  # generic strain breaks the 3-fold symmetry


def test_thermal_displacement_rms_per_element(layout, batch):
    cfg = _cfg()
    num = batch.numbers.reshape(B, -1, 2)
    mask = batch.mask.reshape(B, -1, 2)
    ideal_z = layout.content_z[batch.site_sublattice, batch.site_class]  # (B, M, 2)
    ideal = np.concatenate(
        [np.broadcast_to(batch.site_xy[:, :, None], (*ideal_z.shape, 2)), ideal_z[..., None]], -1
    )
    disp = (batch.positions.reshape(B, -1, 2, 3) - ideal)[mask]
    num = num[mask]
    for el, rms in cfg.thermal_rms.items():
        d = disp[num == atomic_numbers[el]]
        assert d.shape[0] > 150, el
        np.testing.assert_allclose(np.sqrt(np.mean(d**2)), rms, rtol=0.12, err_msg=el)
        np.testing.assert_allclose(np.sqrt(np.mean(d**2, axis=0)), rms, rtol=0.25, err_msg=el)
        np.testing.assert_allclose(d.mean(axis=0), 0, atol=5 * rms / math.sqrt(d.shape[0]))


def test_species_index(layout, batch):
    idx = np.asarray(species_index(jax.tree.map(jnp.asarray, batch), layout))
    species = np.asarray(layout.species)
    assert set(layout.species) == {atomic_numbers[e] for e in ("W", "Se", "Te")}
    np.testing.assert_array_equal(idx == -1, ~batch.mask)
    np.testing.assert_array_equal(species[idx[idx >= 0]], batch.numbers[idx >= 0])


def test_degenerate_prior_edges():
    """Concentration 1 leaves no pristine site; zero-probability classes never appear."""
    cfg = _cfg("wse2te", thermal=False)
    priors = {"edge": PriorConfig(concentrations={"DV": 1.0, "SeW": 0.5})}
    lay = build_layout(dataclasses.replace(cfg, priors=priors), BOX)
    reg = lay.registry
    s = _np(_batch(_keys(3), lay, "edge"))
    np.testing.assert_array_equal(s.site_class[s.site_sublattice == 1], reg.id("DV"))
    metal = s.site_class[s.site_sublattice == 0]
    assert set(np.unique(metal)) == {0, reg.id("SeW")}
    assert abs(np.mean(metal == reg.id("SeW")) - 0.5) < 4 * math.sqrt(0.25 / metal.size)
