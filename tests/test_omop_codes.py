"""The OMOP reader's code shapes (fedrx.medrx.omop_codes): ICD version by shape, NDC."""

from __future__ import annotations

from fedrx.medrx.omop_codes import dx_version, ndc11, px_version


def test_code_shapes() -> None:
    assert [dx_version(c) for c in ("4019", "V1052", "E8497", "E9342", "E0300", "E039",
                                    "E1122", "E785", "E870", "I10", "Z7982", "SR (Sinus Rhythm)",
                                    "225106")
            ] == ["9", "", "", "9", "", "10", "10", "10", "", "10", "10", None, None]
    assert [px_version(c) for c in ("3893", "966", "0DTJ4ZZ", "99219", "225459", "0DTI4ZZ")
            ] == ["9", "9", "10", None, None, None]
    assert [ndc11(v) for v in ("00002751001", " 0002-7510-01 ", "12345-678-90", "12345-6789-1",
                               "0", "Heparin")
            ] == ["00002751001", "00002751001", "12345067890", "12345678901", None, None]
