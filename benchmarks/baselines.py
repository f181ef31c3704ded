"""What a user would otherwise pick, on the same landing files as govlake.

floor(landing, out)            DuckDB reads each landing file and writes it as Parquet, nothing
                               else. DuckDB has no GB18030 decoder built in (and nothing may be
                               downloaded), so a GB18030 file is first transcoded to UTF-8 by
                               ``iconv`` (streaming, C) into a temporary file; that time is part
                               of the floor. CSV: ``read_csv(all_varchar=true)``; JSON Lines:
                               ``read_json(format='newline_delimited')``.
pandas_household(landing, out) the household-registration standardization written by hand in
                               pandas: ID check (normalise, 15->18 upgrade, birth date,
                               province, check digit), dates, code mapping (gender, ethnicity,
                               marital status), phone, division code, birth/gender cross-check;
                               valid rows -> Parquet, invalid rows -> Parquet with the reason.
spark_household(landing, out)  the same in PySpark local[2] (DataFrame expressions, no UDFs).

All three are run in a child process by benchmarks/run.py, which meters them.
"""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "dbt_project" / "seeds"
HOUSEHOLD_GLOB = "public_security/household_registration/*/*.csv"
PROVINCES = {'11', '12', '13', '14', '15', '21', '22', '23', '31', '32', '33', '34', '35', '36', '37', '41',
             '42', '43', '44', '45', '46', '50', '51', '52', '53', '54', '61', '62', '63', '64', '65', '71',
             '81', '82', '83'}
DIVISION_PROVINCES = PROVINCES - {'83'}
W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CHECK = "10X98765432"
FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def value_map(name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(SEEDS / "code_value_map.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["map_name"] == name:
                k = r["source_value"].strip().lower()
                out[k] = min(out.get(k, r["code"]), r["code"])
    return out


def _encoding_of(path: Path) -> str:
    head = path.read_bytes()[:1 << 16]
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as e:
        if e.start > len(head) - 4:  # cut inside a character at the end of the sample
            return "utf-8"
        return "gb18030"


# ------------------------------------------------------------------------------------ floor
def floor(landing: Path, out: Path) -> dict:
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    files = sorted(p for p in landing.rglob("*") if p.is_file() and p.suffix in (".csv", ".jsonl"))
    per_file = []
    for i, f in enumerate(files):
        t0 = time.perf_counter()
        src = f
        transcoded = False
        if f.suffix == ".csv" and _encoding_of(f) == "gb18030":
            src = out / f"{i}_{f.stem}.utf8.csv"
            subprocess.run(["iconv", "-f", "GB18030", "-t", "UTF-8", "-o", str(src), str(f)], check=True)
            transcoded = True
        dest = out / f"{i}_{f.stem}.parquet"
        if f.suffix == ".csv":
            reader = f"read_csv('{src}', all_varchar=true, header=true)"
        else:
            reader = f"read_json('{src}', format='newline_delimited')"
        con.execute(f"copy (select * from {reader}) to '{dest}' (format parquet, compression zstd)")
        n = con.execute(f"select count(*) from '{dest}'").fetchone()[0]
        if transcoded:
            src.unlink()
        per_file.append({"file": str(f.relative_to(landing)), "rows": n, "transcoded": transcoded,
                         "seconds": round(time.perf_counter() - t0, 3)})
    return {"files": per_file, "rows": sum(p["rows"] for p in per_file)}


# ----------------------------------------------------------------------------------- pandas
def _id_check_one(s: str):
    """(standard id, error) for one normalised ID string, the way one writes it by hand."""
    if not s:
        return None, "required.missing"
    if len(s) == 15 and s.isdigit():
        if s[12:15] >= "996":
            return None, "id_number.legacy_centenarian"
        body = s[:6] + "19" + s[6:]
    elif len(s) == 18 and s[:17].isdigit() and (s[17].isdigit() or s[17] == "X"):
        body = s[:17]
    else:
        return None, "id_number.format"
    try:
        birth = dt.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
        if birth > dt.date.today() or birth.year < 1000:
            return None, "id_number.birth_date"
    except ValueError:
        return None, "id_number.birth_date"
    if body[:2] not in PROVINCES:
        return None, "id_number.province"
    c = CHECK[sum(int(d) * w for d, w in zip(body, W)) % 11]
    if len(s) == 18 and s[17] != c:
        return None, "id_number.check_digit"
    return body + c, None


def pandas_household(landing: Path, out: Path) -> dict:
    import numpy as np
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    gender, eth, marital = value_map("gender_cn"), value_map("ethnicity_cn"), value_map("marital_status_cn")
    total = valid_n = 0
    for f in sorted(landing.glob(HOUSEHOLD_GLOB)):
        df = pd.read_csv(f, encoding=_encoding_of(f), dtype=str, keep_default_na=False)
        n = len(df)

        def fail(mask, rule):
            m = mask & err.isna()
            err[m] = rule

        idn = df["公民身份号码"].str.translate(FULLWIDTH).str.replace(" ", "", regex=False).str.strip().str.upper()
        checked = idn.map(_id_check_one)
        df["id_number"] = checked.str[0]
        err = checked.str[1].astype(object)  # first failing rule wins, in the order of the checks
        name = df["姓名"].str.strip().replace("", None)
        fail(name.isna(), "required.missing")
        df["gender_code"] = df["性别"].str.strip().str.lower().map(gender)
        fail(df["性别"].str.strip().eq(""), "required.missing")
        fail(df["gender_code"].isna(), "code.unmapped")
        e = df["民族"].str.strip().str.lower()
        df["ethnicity_code"] = e.map(eth)
        fail(e.ne("") & df["ethnicity_code"].isna(), "code.unmapped")
        for src, col, req in (("出生日期", "birth_date", True), ("登记日期", "registration_date", False)):
            raw = df[src].str.translate(FULLWIDTH).str.strip()
            d = pd.to_datetime(raw, format="%Y%m%d", errors="coerce")
            d = d.fillna(pd.to_datetime(raw, format="%Y-%m-%d", errors="coerce"))
            df[col] = d.dt.date
            if req:
                fail(raw.eq(""), "required.missing")
            fail(raw.ne("") & d.isna(), "date.invalid")
        div = df["户籍地行政区划代码"].str.translate(FULLWIDTH).str.strip()
        ok = div.str.fullmatch(r"[0-9]{6}") & div.str[:2].isin(DIVISION_PROVINCES)
        df["division_code"] = div.where(ok)
        fail(div.eq(""), "required.missing")
        fail(~ok, "division_code.invalid")
        ms = df["婚姻状况"].str.strip().str.lower()
        df["marital_status_code"] = np.where(ms.eq(""), "90", ms.map(marital))
        fail(pd.isna(df["marital_status_code"]), "code.unmapped")
        ph = df["联系电话"].str.translate(FULLWIDTH).str.replace(r"[ ()\[\]-]", "", regex=True)
        ph = ph.str.extract(r"^(?:\+86|0086|86)?(1[3-9][0-9]{9})$")[0]
        df["phone"] = ph
        fail(df["联系电话"].str.strip().ne("") & ph.isna(), "phone.format")
        bid = pd.to_datetime(df["id_number"].str[6:14], format="%Y%m%d", errors="coerce").dt.date
        fail(df["id_number"].notna() & df["birth_date"].notna() & (bid != df["birth_date"]), "id_number.birth_mismatch")
        gid = np.where(df["id_number"].str[16].fillna("0").astype(int) % 2 == 1, "1", "2")
        fail(df["id_number"].notna() & df["gender_code"].notna() & (gid != df["gender_code"]), "id_number.gender_mismatch")
        df["name"] = name
        df["address"] = df["户籍地址"].str.strip().replace("", None)
        df["_row_number"] = np.arange(1, n + 1)
        good = err.isna()
        cols = ["id_number", "name", "gender_code", "ethnicity_code", "birth_date", "address", "division_code",
                "marital_status_code", "phone", "registration_date", "_row_number"]
        df.loc[good, cols].to_parquet(out / f"{f.stem}.parquet", index=False)
        bad = df.loc[~good, ["_row_number"]].assign(rule=err[~good])
        bad.to_parquet(out / f"{f.stem}.quarantine.parquet", index=False)
        total += n
        valid_n += int(good.sum())
    return {"rows": total, "valid": valid_n}


# ------------------------------------------------------------------------------------ spark
def spark_household(landing: Path, out: Path) -> dict:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (SparkSession.builder.master("local[2]").appName("govlake-bench")
             .config("spark.ui.enabled", "false").config("spark.driver.memory", "3g")
             .config("spark.sql.legacy.javaCharsets", "true")  # Spark 4 allows GB18030 only with this
             .config("spark.sql.ansi.enabled", "false")  # invalid dates/digits -> NULL, not an error
             .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        gender, eth, marital = value_map("gender_cn"), value_map("ethnicity_cn"), value_map("marital_status_cn")

        def mapper(d):
            return F.create_map(*[F.lit(x) for kv in d.items() for x in kv])

        fw_from = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000"
        fw_to = "".join(chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)) + " "

        def half(c):
            return F.trim(F.translate(c, fw_from, fw_to))

        total = valid_n = 0
        for f in sorted(landing.glob(HOUSEHOLD_GLOB)):
            df = (spark.read.option("header", True).option("encoding", _encoding_of(f).upper())
                  .option("multiLine", False).csv(str(f)))
            # Spark reads an empty CSV field as NULL; pandas (keep_default_na=False) and govlake keep
            # it as an empty string, which the rules below test for (an empty marital status is
            # '90'; without this ~0.8 % of rows were rejected as code.unmapped)
            df = df.na.fill("")
            s = F.upper(F.regexp_replace(half(F.col("公民身份号码")), " ", ""))
            df = df.withColumn("_s", s)
            df = df.withColumn("_body", F.when(F.col("_s").rlike("^[0-9]{15}$"),
                                               F.concat(F.substring("_s", 1, 6), F.lit("19"), F.substring("_s", 7, 9)))
                               .when(F.col("_s").rlike("^[0-9]{17}[0-9X]$"), F.substring("_s", 1, 17)))
            total_w = sum(F.substring("_body", k + 1, 1).cast("int") * W[k] for k in range(17))
            df = df.withColumn("_c", F.substring(F.lit(CHECK), (total_w % 11 + 1).cast("int"), 1))
            bdate = F.to_date(F.substring("_body", 7, 8), "yyyyMMdd")
            id_err = (F.when(F.col("_s") == "", "required.missing")
                      .when(F.col("_body").isNull(), "id_number.format")
                      .when((F.length("_s") == 15) & (F.substring("_s", 13, 3) >= "996"), "id_number.legacy_centenarian")
                      .when(bdate.isNull() | (bdate > F.current_date()), "id_number.birth_date")
                      .when(~F.substring("_body", 1, 2).isin(*PROVINCES), "id_number.province")
                      .when((F.length("_s") == 18) & (F.substring("_s", 18, 1) != F.col("_c")), "id_number.check_digit"))
            df = df.withColumn("_e_id", id_err)
            df = df.withColumn("id_number", F.when(F.col("_e_id").isNull(), F.concat("_body", "_c")))
            df = df.withColumn("gender_code", mapper(gender)[F.lower(F.trim("性别"))])
            df = df.withColumn("ethnicity_code", mapper(eth)[F.lower(F.trim("民族"))])
            ms = F.lower(F.trim("婚姻状况"))
            df = df.withColumn("marital_status_code", F.when(ms == "", "90").otherwise(mapper(marital)[ms]))

            def pdate(c):
                v = half(F.col(c))
                return F.coalesce(F.to_date(v, "yyyyMMdd"), F.to_date(v, "yyyy-MM-dd"))
            df = df.withColumn("birth_date", pdate("出生日期")).withColumn("registration_date", pdate("登记日期"))
            div = half(F.col("户籍地行政区划代码"))
            df = df.withColumn("division_code", F.when(div.rlike("^[0-9]{6}$") & F.substring(div, 1, 2).isin(*DIVISION_PROVINCES), div))
            ph = F.regexp_replace(half(F.col("联系电话")), r"[ ()\[\]-]", "")
            df = df.withColumn("phone", F.nullif(F.regexp_extract(ph, r"^(?:\+86|0086|86)?(1[3-9][0-9]{9})$", 1), F.lit("")))
            err = (F.when(F.col("_e_id").isNotNull(), F.col("_e_id"))
                   .when(F.trim("姓名") == "", "required.missing")
                   .when(F.trim("性别") == "", "required.missing")
                   .when(F.col("gender_code").isNull(), "code.unmapped")
                   .when((F.trim("民族") != "") & F.col("ethnicity_code").isNull(), "code.unmapped")
                   .when(half(F.col("出生日期")) == "", "required.missing")
                   .when(F.col("birth_date").isNull(), "date.invalid")
                   .when((half(F.col("登记日期")) != "") & F.col("registration_date").isNull(), "date.invalid")
                   .when(F.col("division_code").isNull(), "division_code.invalid")
                   .when(F.col("marital_status_code").isNull(), "code.unmapped")
                   .when((F.trim("联系电话") != "") & F.col("phone").isNull(), "phone.format")
                   .when(F.to_date(F.substring("id_number", 7, 8), "yyyyMMdd") != F.col("birth_date"), "id_number.birth_mismatch")
                   .when(F.when(F.substring("id_number", 17, 1).cast("int") % 2 == 1, "1").otherwise("2") != F.col("gender_code"),
                         "id_number.gender_mismatch"))
            df = df.withColumn("_error", err).cache()
            cols = ["id_number", "姓名", "gender_code", "ethnicity_code", "birth_date", "户籍地址", "division_code",
                    "marital_status_code", "phone", "registration_date"]
            df.where("_error is null").select(*cols).write.mode("overwrite").parquet(str(out / f"{f.stem}"))
            df.where("_error is not null").select("公民身份号码", "_error").write.mode("overwrite").parquet(
                str(out / f"{f.stem}.quarantine"))
            counts = df.groupBy(F.col("_error").isNull().alias("ok")).count().collect()
            for r in counts:
                total += r["count"]
                valid_n += r["count"] if r["ok"] else 0
            df.unpersist()
        return {"rows": total, "valid": valid_n}
    finally:
        spark.stop()
