"""Hand-written raw fixtures for the dbt models (raw Parquet + delivery ledger), with the truth.

Each feed gets a few dozen rows written the way extraction writes them (all VARCHAR as
delivered + lineage columns), including invalid rows whose expected quarantine rule is known.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from govlake import metadata
from govlake.storage import Lake

W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def id18(area: str, birth: str, seq: str) -> str:
    """A valid 18-digit ID number (GB 11643 MOD 11-2), computed independently of the macros."""
    s17 = area + birth + seq
    return s17 + "10X98765432"[sum(int(a) * w for a, w in zip(s17, W)) % 11]


def bad_check(id_: str) -> str:
    """The same ID with a wrong check character."""
    c = "0" if id_[-1] != "0" else "1"
    return id_[:-1] + c


# ---- people ------------------------------------------------------------------------------
P1 = id18("110105", "19800101", "001")  # male
P2 = id18("110105", "19820202", "002")  # female
P3 = id18("310101", "19900315", "011")  # male
P4 = id18("310101", "19920420", "022")  # female
P5 = id18("440305", "19750505", "031")  # male
P6 = id18("440305", "19780808", "042")  # female
P9 = id18("320102", "19790909", "044")  # female, not in household registration
P7_15 = "610104620927690"  # 15-digit legacy form
P7 = "610104196209276908"  # its upgrade (docs/standards.md)
P8 = "11010519491231002X"  # standard's example, female 1949-12-31
P10 = id18("650102", "19850303", "013")  # male, 阿卜杜拉·艾山
MOTHER = id18("110108", "19950101", "024")
FATHER = id18("110108", "19930101", "015")
LEGAL1 = id18("350203", "19700101", "017")

USCC_A = "91350200MA2YJ1XR9G"
USCC_B = "91440101MA5CJQ4N59"
USCC_C = "123502001549897397"
USCC_D = "91110000600037341L"


@dataclass
class Batch:
    dept: str
    dataset: str
    batch_id: str
    delivery_date: str
    file_name: str
    rows: list[list[str | None]]
    superseded_by: str | None = None

    @property
    def source_file(self) -> str:
        return f"{self.dept}/{self.dataset}/{self.delivery_date}/{self.file_name}"


@dataclass
class Expected:
    """(dept, dataset, batch_id, row_number) -> set of rules, for the invalid rows."""

    quarantined: dict[tuple[str, str, str, int], set[str]] = field(default_factory=dict)


def _hh(id_, name, gender, eth, birth, addr, div, marital, phone, reg="20200101"):
    return [id_, name, gender, eth, birth, addr, div, marital, phone, reg]


def batches() -> tuple[list[Batch], Expected]:
    exp = Expected()
    out: list[Batch] = []

    def add(b: Batch, bad: dict[int, set[str]] | None = None) -> Batch:
        out.append(b)
        for rn, rules in (bad or {}).items():
            exp.quarantined[(b.dept, b.dataset, b.batch_id, rn)] = rules
        return b

    # ---- public_security.household_registration (snapshot) --------------------------------
    ps = ("public_security", "household_registration")
    add(Batch(*ps, "ps-20261120", "2026-11-20", "hukou.csv", [
        _hh(P1, "张三", "男", "汉族", "19800101", "北京市东城区旧地址1号", "110101", "已婚", "13800000001"),
        _hh(P3, "王五", "男", "汉族", "19900315", "上海市黄浦区旧址", "310101", "未婚", "13800000003"),
    ]))
    # the first delivery of 2026-11-21, replaced the same day by a corrected file
    add(Batch(*ps, "ps-20261121a", "2026-11-21", "hukou.csv", [
        _hh(P1, "张三错", "男", "汉族", "19800101", "错误地址", "110101", "已婚", "13800000001"),
    ], superseded_by="ps-20261121b"))
    add(Batch(*ps, "ps-20261121b", "2026-11-21", "hukou.csv", [
        # 1-9: valid
        _hh(P1, "张三", "男", "汉族", "19800101", "北京市东城区景山前街4号", "110101", "离婚", "+86 138-0000-0001"),
        _hh(P2, "李四", "女", "汉", "19820202", "北京市东城区", "110101", "已婚", "138 0000 0002"),
        _hh(P3, "王五", "男", "回族", "19900315", "上海市黄浦区", "310101", "未婚", "13800000003"),
        _hh(P4, "赵六", "女", "汉族", "19920420", "上海市黄浦区", "310101", "未婚", ""),
        _hh(P5, "孙七", "男", "汉族", "19750505", "深圳市福田区", "440304", "离婚", "13800000005"),
        _hh(P6, "周八", "女", "汉族", "19780808", "深圳市福田区", "440304", "再婚", "13800000006"),
        _hh(P7_15, "吴九", "女", "汉族", "19620927", "西安市新城区", "610102", "", None),
        # full-width digits, trailing spaces, lower-case x
        _hh("１１０１０５１９４９１２３１００２x  ", "郑十", "女", "汉族", "19491231", "北京市朝阳区", "110105", "丧偶", "13800000008"),
        _hh(P10, "阿卜杜拉·艾山", "男", "维吾尔族", "19850303", "乌鲁木齐市天山区𠀀路1号", "650102", "初婚", "13800000010"),
        # 10-: invalid
        _hh("110105194912310021", "错一", "女", "汉族", "19491231", "x", "110105", "已婚", ""),   # 10 check digit
        _hh("110105194902310026", "错二", "女", "汉族", "19490231", "x", "110105", "已婚", ""),   # 11 Feb 31
        _hh(id18("110105", "19880808", "033"), "", "男", "汉族", "19880808", "x", "110105", "未婚", ""),  # 12 no name
        _hh(id18("110105", "19880809", "035"), "错四", "未知", "汉族", "19880809", "x", "110105", "未婚", ""),  # 13 gender
        _hh(id18("110105", "19880810", "037"), "错五", "男", "汉族", "19880811", "x", "110105", "未婚", ""),  # 14 birth≠ID
        _hh(id18("110105", "19880812", "039"), "错六", "女", "汉族", "19880812", "x", "110105", "未婚", ""),  # 15 gender≠ID
        _hh(id18("110105", "19880813", "041"), "错七", "男", "汉族", "19880813", "x", "110105", "未婚", "12345"),  # 16 phone
        _hh(id18("110105", "19880814", "043"), "错八", "男", "汉族", "19880814", "x", "110105", "分居", ""),  # 17 marital
        _hh(P2, "李四", "女", "汉", "19820202", "北京市东城区", "110101", "已婚", "138 0000 0002"),  # 18 = row 2
        _hh(id18("110105", "19880815", "045"), "错九", "男", "汉族", "2026年13月1日", "x", "110105", "未婚", ""),  # 19 date
        _hh(id18("110105", "19880816", "047"), "错十", "男", "汉族", "19880816", "x", "11010", "未婚", ""),  # 20 division
    ]), {10: {"id_number.check_digit"}, 11: {"id_number.birth_date", "date.invalid"}, 12: {"required.missing"},
         13: {"code.unmapped"}, 14: {"id_number.birth_mismatch"}, 15: {"id_number.gender_mismatch"},
         16: {"phone.format"}, 17: {"code.unmapped"}, 18: {"row.duplicate"}, 19: {"date.invalid"},
         20: {"division_code.invalid"}})

    # ---- civil_affairs.marriage_registration (incremental) --------------------------------
    ca = ("civil_affairs", "marriage_registration")
    # columns: 登记类型, 登记日期, 男方身份证号, 男方姓名, 女方身份证号, 女方姓名, 登记机关, 证书编号
    add(Batch(*ca, "ca-20261120", "2026-11-20", "hydj.csv", [
        ["结婚", "2005年6月1日", P1, "张三", P2, "李四", "东城区民政局", "J2005-001"],
        ["结婚", "2021-03-08", P3, "王五", P4, "赵六", "黄浦区民政局", "J2021-002"],
        ["结婚", "2010年1月1日", P5, "孙七", P9, "钱某", "福田区民政局", "J2010-003"],
        ["结婚", "2012-02-02", "1.10105E+17", "某甲", P8, "郑十", "朝阳区民政局", "J2012-009"],  # 4 excel
    ]), {4: {"id_number.format"}})
    mr2 = [
        ["离婚", "2020-09-09", P1, "张三", P2, "李四", "东城区民政局", "L2020-004"],
        ["离婚", "2015年5月5日", P5, "孙七", P9, "钱某", "福田区民政局", "L2015-005"],
        ["补发结婚证", "2023-01-01", P3, "王五", P4, "赵六", "黄浦区民政局", "J2021-002"],
        ["结婚", "2020-10-10", P5, "孙七", P6, "周八", "福田区民政局", "J2020-006"],
        ["结婚", "2019-01-01", "110105194912310000", "某乙", P8, "郑十", "朝阳区民政局", "J2019-010"],  # 5
    ]
    add(Batch(*ca, "ca-20261121", "2026-11-21", "hydj.csv", mr2), {5: {"id_number.check_digit"}})
    # the same events delivered again the next day (a department re-sends): dedup on key
    add(Batch(*ca, "ca-20261122", "2026-11-22", "hydj_resend.csv", [r[:] for r in mr2[:4]]))

    # ---- human_resources.social_insurance (snapshot, JSON numbers come as text) ----------
    hr = ("human_resources", "social_insurance")
    # aac002, aac003, aac004, aab998, aae140, aae030, aac008
    add(Batch(*hr, "hr-20261120", "2026-11-20", "si.jsonl", [
        [P1, "张三", "1", USCC_A, "110", "200501", "1"],
        [P9, "钱某", "2", None, "110", "200801", "1"],
    ]))
    add(Batch(*hr, "hr-20261121", "2026-11-21", "si.jsonl", [
        [P1, "张三", "1", USCC_A, "110", "200501", "1"],
        [P1, "张三", "1", USCC_A, "310", "200501", "1"],
        [P3, "王五", "1", None, "110", "202305", "2"],
        [P3, "王五", "1", None, "110", "202305", "2"],  # 4 exact duplicate of 3
        [P4, "赵六", "1", None, "110", "202305", "1"],  # 5 gender≠ID (P4 female)
        [P6, "周八", "2", "91110000600037342L", "110", "202305", "1"],  # 6 uscc check
        [P5, "孙七", "1", None, "110", "202313", "1"],  # 7 year_month
        [P5, "孙七", "1", None, "999", "202301", "1"],  # 8 insurance type
        [MOTHER, "母亲", "2", None, "310", "202001", "4"],
    ]), {4: {"row.duplicate"}, 5: {"id_number.gender_mismatch"}, 6: {"uscc.check_char"},
         7: {"year_month.invalid"}, 8: {"code.unmapped"}})

    # ---- tax.taxpayer_registration (snapshot) ---------------------------------------------
    tx = ("tax", "taxpayer_registration")
    # 纳税人识别号, 纳税人名称, 法定代表人身份证号, 登记日期, 纳税信用等级, 主管税务机关
    add(Batch(*tx, "tx-20261116", "2026-11-16", "nsr.csv", [
        [USCC_A, "旧名称公司", LEGAL1, "2015/3/1", "B", "厦门市税务局"],
    ]))
    add(Batch(*tx, "tx-20261123", "2026-11-23", "nsr.csv", [
        [USCC_A, "厦门某某科技有限公司", LEGAL1, "2015/3/1", "A", "厦门市思明区税务局"],
        ["９１４４０１０１ＭＡ５ＣＪＱ４Ｎ５９", "广州某某贸易有限公司", None, "2018/12/25", "M", "广州市天河区税务局"],
        [USCC_D, "北京某某有限公司", P1, "2001/1/9", "B", "北京市税务局"],
        ["91350200MA2YJ1XR9I", "错误代码公司", None, "2019/1/1", "C", "厦门市税务局"],  # 4 format (I)
        ["91110000600037342L", "校验错公司", None, "2019/1/1", "C", "北京市税务局"],  # 5 check char
        [USCC_B, "重复公司", None, "2019/1/1", "Z", "广州市税务局"],  # 6 rating unmapped
    ]), {4: {"uscc.format"}, 5: {"uscc.check_char"}, 6: {"code.unmapped"}})

    # ---- market_regulation.enterprise_registration (snapshot) -----------------------------
    mk = ("market_regulation", "enterprise_registration")
    # 统一社会信用代码, 企业名称, 企业类型, 法定代表人, 法定代表人证件号码, 成立日期, 注册资本(万元), 住所, 登记状态
    add(Batch(*mk, "mk-20261121", "2026-11-21", "qydj.csv", [
        [USCC_A, "厦门某某科技有限公司", "有限责任公司", "林一", LEGAL1, "2015-03-01", "1000", "厦门市思明区", "存续"],
        [USCC_C, "厦门市某机关𠀀", "机关", "陈二", None, "45047", "0", "厦门市", "在业"],
        [USCC_B, "广州某某贸易有限公司", "有限责任公司", "黄三", P3, "2018-12-20", "50.5", "广州市天河区", "注销"],
        ["91350200MA2YJ1XR9G", "重复", "有限责任公司", "林一", None, "2015-03-01", "abc", "厦门市", "存续"],  # 4 decimal
        [USCC_D, "北京某某有限公司", "股份有限公司", "张三", P1, "2001-01-01", "200", "北京市", "已撤销"],  # 5 status
    ]), {4: {"decimal.invalid"}, 5: {"code.unmapped"}})

    # ---- health.birth_certificate (incremental) -------------------------------------------
    he = ("health", "birth_certificate")
    # 出生医学证明编号, 新生儿姓名, 性别, 出生日期, 出生地行政区划代码, 母亲身份证号, 父亲身份证号
    add(Batch(*he, "he-20261121", "2026-11-21", "csyx.csv", [
        ["Q110000001", "小明", "1", "2026-11-01 08:30", "110108", MOTHER, FATHER],
        ["Q110000002", "小红", "0", "2026-11-02 23:59", "110108", MOTHER, ""],
        ["Q110000003", "小刚", "1", "2026-11-03 10:00", "110108", "", FATHER],  # 3 mother missing
        ["Q110000004", "小丽", "3", "2026-11-04 10:00", "110108", MOTHER, ""],  # 4 gender unmapped
    ]), {3: {"required.missing"}, 4: {"code.unmapped"}})
    add(Batch(*he, "he-20261122", "2026-11-22", "csyx.csv", [
        ["Q110000002", "小红", "0", "2026-11-02 23:59", "110108", MOTHER, FATHER],  # corrected later
    ]))
    return out, exp


def write(lake: Lake) -> tuple[list[Batch], Expected]:
    """Write every fixture batch as raw Parquet and the ledger export; return the truth."""
    bs, exp = batches()
    ledger = []
    ingested = dt.datetime(2026, 11, 24, 8, 0, 0)
    for i, b in enumerate(bs):
        ds = metadata.dataset(b.dept, b.dataset)
        cols = ds.column_names
        assert all(len(r) == len(cols) for r in b.rows), b.batch_id
        n = len(b.rows)
        data = {c: pa.array([r[j] for r in b.rows], pa.string()) for j, c in enumerate(cols)}
        data.update({
            "_batch_id": pa.array([b.batch_id] * n, pa.string()),
            "_source_file": pa.array([b.source_file] * n, pa.string()),
            "_source_sha256": pa.array([f"{i:064x}"] * n, pa.string()),
            "_row_number": pa.array(range(1, n + 1), pa.int64()),
            "_ingested_at": pa.array([ingested + dt.timedelta(minutes=i)] * n, pa.timestamp("us")),
            "_delivery_date": pa.array([b.delivery_date] * n, pa.string()),
        })
        out = lake.raw_batch(b.dept, b.dataset, b.batch_id)
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(data), out / "part-00000.parquet", compression="zstd")
        ledger.append({
            "batch_id": b.batch_id, "dept": b.dept, "dataset": b.dataset,
            "delivery_date": b.delivery_date, "file_name": b.file_name, "source_file": b.source_file,
            "sha256": f"{i:064x}", "size_bytes": 100 * n, "rows": n, "status": "ingested",
            "supersedes": None, "superseded_by": b.superseded_by,
            "ingested_at": (ingested + dt.timedelta(minutes=i)).isoformat(),
        })
    for row in ledger:  # the corrected batch names the one it replaces
        for other in ledger:
            if other["superseded_by"] == row["batch_id"]:
                row["supersedes"] = other["batch_id"]
    schema = pa.schema([(k, pa.int64() if k in ("size_bytes", "rows") else pa.string()) for k in ledger[0]])
    lake.ledger_export.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(ledger, schema=schema), lake.ledger_export)
    return bs, exp


def raw_counts(bs: list[Batch]) -> dict[tuple[str, str, str], int]:
    return {(b.dept, b.dataset, b.batch_id): len(b.rows) for b in bs}


def source_files(bs: list[Batch]) -> dict[str, Path]:
    return {b.batch_id: Path(b.source_file) for b in bs}
