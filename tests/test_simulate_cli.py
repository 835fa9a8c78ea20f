"""The README's first command: `python -m stemjax.simulate` writes a PNG and never overwrites."""

import pytest

from stemjax.simulate import main, wse2_demo_cell


def test_demo_cell_has_the_labelled_defects():
    atoms, defects = wse2_demo_cell((6, 4))
    names = [d[0] for d in defects]
    assert names == ["SV", "DV", "2Te", "SeTe", "VW"]
    symbols = atoms.get_chemical_symbols()
    assert symbols.count("Te") == 3  # 2Te column + one Te in SeTe
    assert symbols.count("W") == 6 * 4 * 2 - 1  # one W vacancy
    assert symbols.count("Se") + symbols.count("Te") == 6 * 4 * 4 - 3  # SV + DV remove 3


def test_cli_writes_png_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "demo.png"
    main(["--out", str(out), "--cells", "4", "3", "--scan-sampling", "0.3"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out.resolve()) in capsys.readouterr().out
    stamp = out.stat().st_mtime_ns
    with pytest.raises(SystemExit):
        main(["--out", str(out)])
    assert out.stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "demo.jpg")])
