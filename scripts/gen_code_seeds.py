"""Generate the code-table seeds in dbt_project/seeds/ (run once; the CSVs are committed).

    .venv/bin/python scripts/gen_code_seeds.py

Sources (docs/standards.md §3, §4):
- GB/T 2261.1 gender, GB/T 2261.2 marital status, GB/T 3304 ethnicity (numeric + roman codes):
  written out below.
- GB/T 2260 division codes, versioned: python-stdnum's bundled history table ``stdnum/cn/loc.dat``
  (compiled from the annual lists; entries like ``[1983-1997]name``). Read here at generation
  time only; nothing reads stdnum at run time.
- Per-source value maps (``value_map`` keys in models/staging/*/_*__sources.yml): below.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

SEEDS = Path(__file__).resolve().parents[1] / "dbt_project" / "seeds"

GENDER = [("0", "未知的性别"), ("1", "男"), ("2", "女"), ("9", "未说明的性别")]

MARITAL = [
    ("10", "未婚"), ("20", "已婚"), ("21", "初婚"), ("22", "再婚"), ("23", "复婚"),
    ("30", "丧偶"), ("40", "离婚"), ("90", "未说明的婚姻状况"),
]

# GB/T 3304-1991: code, name, roman (two letters). 97/98 are widely used additions.
ETHNICITY = [
    ("01", "汉族", "HA"), ("02", "蒙古族", "MG"), ("03", "回族", "HU"), ("04", "藏族", "ZA"),
    ("05", "维吾尔族", "UG"), ("06", "苗族", "MH"), ("07", "彝族", "YI"), ("08", "壮族", "ZH"),
    ("09", "布依族", "BY"), ("10", "朝鲜族", "CS"), ("11", "满族", "MA"), ("12", "侗族", "DO"),
    ("13", "瑶族", "YA"), ("14", "白族", "BA"), ("15", "土家族", "TJ"), ("16", "哈尼族", "HN"),
    ("17", "哈萨克族", "KZ"), ("18", "傣族", "DA"), ("19", "黎族", "LI"), ("20", "傈僳族", "LS"),
    ("21", "佤族", "VA"), ("22", "畲族", "SH"), ("23", "高山族", "GS"), ("24", "拉祜族", "LH"),
    ("25", "水族", "SU"), ("26", "东乡族", "DX"), ("27", "纳西族", "NX"), ("28", "景颇族", "JP"),
    ("29", "柯尔克孜族", "KG"), ("30", "土族", "TU"), ("31", "达斡尔族", "DU"), ("32", "仫佬族", "ML"),
    ("33", "羌族", "QI"), ("34", "布朗族", "BL"), ("35", "撒拉族", "SL"), ("36", "毛南族", "MN"),
    ("37", "仡佬族", "GL"), ("38", "锡伯族", "XB"), ("39", "阿昌族", "AC"), ("40", "普米族", "PM"),
    ("41", "塔吉克族", "TA"), ("42", "怒族", "NU"), ("43", "乌孜别克族", "UZ"), ("44", "俄罗斯族", "RS"),
    ("45", "鄂温克族", "EW"), ("46", "德昂族", "DE"), ("47", "保安族", "BN"), ("48", "裕固族", "YG"),
    ("49", "京族", "GI"), ("50", "塔塔尔族", "TT"), ("51", "独龙族", "DR"), ("52", "鄂伦春族", "OR"),
    ("53", "赫哲族", "HZ"), ("54", "门巴族", "MB"), ("55", "珞巴族", "LB"), ("56", "基诺族", "JN"),
    ("97", "其他", ""), ("98", "外国血统中国籍人士", ""),
]

VALUE_MAPS: dict[str, list[tuple[str, str]]] = {
    "gender_cn": [("男", "1"), ("男性", "1"), ("M", "1"), ("Male", "1"),
                  ("女", "2"), ("女性", "2"), ("F", "2"), ("Female", "2")],
    "gender_12": [("1", "1"), ("2", "2")],
    # health / birth_certificate: this system's own convention, 0 = female, 1 = male (docs/sources.md §6)
    "gender_birth_cert": [("0", "2"), ("1", "1")],
    # empty -> 90 is done by the staging macro, not here (a CSV cannot hold an empty key)
    "marital_status_cn": [
        ("未婚", "10"), ("已婚", "20"), ("在婚", "20"), ("有配偶", "20"), ("初婚", "21"),
        ("再婚", "22"), ("复婚", "23"), ("丧偶", "30"), ("离婚", "40"), ("离异", "40"),
        ("不详", "90"), ("未说明", "90"), ("未说明的婚姻状况", "90"),
        # docs/standards.md §4 variants table
        ("married", "20"), ("M", "20"), ("single", "10"), ("unmarried", "10"), ("S", "10"),
        ("divorced", "40"), ("D", "40"), ("widowed", "30"), ("W", "30"), ("unknown", "90"),
    ],
    "marriage_event_type": [("结婚", "marriage"), ("离婚", "divorce"), ("补发结婚证", "reissue"),
                            ("补发离婚证", "reissue"), ("补证", "reissue")],
    "insurance_type": [("110", "110"), ("310", "310"), ("210", "210")],
    "insurance_status": [("1", "1"), ("2", "2"), ("4", "4")],
    "tax_credit_rating": [(c, c) for c in ("A", "B", "M", "C", "D")],
    "enterprise_status": [(c, c) for c in ("存续", "在业", "注销", "吊销", "迁出")],
}


def _ethnicity_map() -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for code, name, roman in ETHNICITY:
        rows.append((name, code))
        if name.endswith("族"):
            rows.append((name[:-1], code))
        if roman:
            rows.append((roman, code))
        rows.append((code, code))
        if code.startswith("0"):
            rows.append((code[1:], code))
    rows += [("毛难族", "36"), ("毛难", "36"), ("崩龙族", "46"), ("崩龙", "46"),
             ("外国血统", "98"), ("其它", "97")]
    return rows


_ENTRY = re.compile(r"^\[(\d*)-(\d*)\](.*)$")


def _divisions(loc_dat: Path) -> list[tuple[str, str, str, str]]:
    """(code, name, valid_from, valid_to): one row per (code, name) period; years -> dates."""
    rows = []
    province = None
    for line in loc_dat.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r'^(\s*)(\d+) (\w+)="(.*)"$', line)
        if not m:
            raise ValueError(f"{loc_dat}: unexpected line {line!r}")
        indent, digits, kind, value = m.groups()
        if not indent:
            province = digits
            continue
        code = province + digits
        for part in value.split(","):
            em = _ENTRY.match(part)
            start, end, name = em.groups() if em else ("", "", part)
            rows.append((code, name, f"{start}-01-01" if start else "", f"{end}-12-31" if end else ""))
    return sorted(rows, key=lambda r: (r[0], r[2] or "0000"))


def _write(name: str, header: list[str], rows) -> None:
    with open(SEEDS / name, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    print(f"{name}: {len(rows)} rows")


def main() -> None:
    import stdnum

    SEEDS.mkdir(parents=True, exist_ok=True)
    _write("code_gender.csv", ["code", "name"], GENDER)
    _write("code_marital_status.csv", ["code", "name"], MARITAL)
    _write("code_ethnicity.csv", ["code", "name", "roman"], ETHNICITY)

    divisions = _divisions(Path(stdnum.__file__).parent / "cn" / "loc.dat")
    _write("code_division.csv", ["code", "name", "valid_from", "valid_to"], divisions)
    provinces = {}
    for code, name, _start, end in divisions:
        if code.endswith("0000") and not end:
            provinces[code[:2]] = name
    expected = "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82".split()
    assert sorted(provinces) == expected, sorted(provinces)
    _write("code_province.csv", ["code", "name"], sorted(provinces.items()))

    vm = [(m, src, code) for m, pairs in VALUE_MAPS.items() for src, code in pairs]
    vm += [("ethnicity_cn", src, code) for src, code in _ethnicity_map()]
    seen: dict[tuple[str, str], str] = {}
    for m, src, code in vm:  # one code per (map, case-insensitive value)
        key = (m, src.lower())
        assert seen.setdefault(key, code) == code, (key, code, seen[key])
    vm = list(dict.fromkeys(vm))
    _write("code_value_map.csv", ["map_name", "source_value", "code"], vm)


if __name__ == "__main__":
    main()
