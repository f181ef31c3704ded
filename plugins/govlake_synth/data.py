"""Static word lists and code tables for the synthetic data generator.

Person-name words come from Faker's zh_CN providers, loaded once (never Faker per row).
"""

from __future__ import annotations

import bisect
import itertools

from faker.providers.address.zh_CN import Provider as _Addr
from faker.providers.company.zh_CN import Provider as _Company
from faker.providers.person.zh_CN import Provider as _Person

from govlake_synth.divisions import DIVISIONS

# ---- names ---------------------------------------------------------------------------
SURNAMES = list(_Person.last_names.keys())
SURNAME_CUM = list(itertools.accumulate(_Person.last_names.values()))
GIVEN_MALE = list(_Person.first_names_male)
GIVEN_FEMALE = list(_Person.first_names_female)
GIVEN_MALE_1 = [g for g in GIVEN_MALE if len(g) == 1]
GIVEN_FEMALE_1 = [g for g in GIVEN_FEMALE if len(g) == 1]

# Uyghur / Kazakh names are written given·father's-given, with a middle dot.
DOTTED_MALE = ["阿卜杜拉", "艾山", "买买提", "吐尔逊", "艾力", "阿不都热依木", "依明", "玉素甫",
               "热合曼", "努尔兰", "帕尔哈提", "亚森", "叶尔兰", "别克", "阿斯哈尔", "哈力木拉提"]
DOTTED_FEMALE = ["阿依古丽", "古丽米拉", "热依拉", "帕提古丽", "迪丽努尔", "阿米娜", "祖丽菲亚",
                 "努尔古丽", "米合热班", "再努热", "阿依努尔", "古丽娜尔", "加娜尔", "阿依达娜"]
# Middle-dot variants seen in real systems; the standard form is U+00B7.
DOT_STANDARD = "\u00b7"
DOT_VARIANTS = ["\u2022", "\u2027", "\u30fb"]
ZERO_WIDTH = "\u200b"

# Characters outside GBK (GB18030 four-byte / Extension A): 䶮 U+4DAE, 𠀀 U+20000, 𠮷, 𪚥.
RARE_CHARS = ["䶮", "𠀀", "𠮷", "𪚥"]

# ---- ethnicity (GB/T 3304) ------------------------------------------------------------
# (code, name without 族, share outside Xinjiang, share in Xinjiang)
ETHNICITIES = [
    ("01", "汉", 0.905, 0.55), ("02", "蒙古", 0.004, 0.01), ("03", "回", 0.008, 0.06),
    ("04", "藏", 0.004, 0.0), ("05", "维吾尔", 0.006, 0.30), ("06", "苗", 0.007, 0.0),
    ("07", "彝", 0.006, 0.0), ("08", "壮", 0.013, 0.0), ("09", "布依", 0.002, 0.0),
    ("10", "朝鲜", 0.001, 0.0), ("11", "满", 0.008, 0.0), ("12", "侗", 0.002, 0.0),
    ("13", "瑶", 0.002, 0.0), ("14", "白", 0.001, 0.0), ("15", "土家", 0.006, 0.0),
    ("17", "哈萨克", 0.001, 0.07),
]
ETH_CODES = [e[0] for e in ETHNICITIES]
ETH_NAMES = [e[1] for e in ETHNICITIES]
ETH_CUM = list(itertools.accumulate(e[2] for e in ETHNICITIES))
ETH_CUM_XJ = list(itertools.accumulate(e[3] for e in ETHNICITIES))
DOTTED_ETHNICITIES = {"05", "17"}


def pick_cum(cum: list[float], u: float) -> int:
    i = bisect.bisect_right(cum, u * cum[-1])
    return min(i, len(cum) - 1)


# ---- marital status (GB/T 2261.2) -------------------------------------------------------
MARITAL_CODES = {"未婚": "10", "已婚": "20", "初婚": "21", "再婚": "22", "复婚": "23",
                 "丧偶": "30", "离婚": "40", "": "90"}

# ---- phones ------------------------------------------------------------------------------
# Blocks inside the strict pattern of docs/standards.md §5.
MOBILE_PREFIXES = (
    [f"13{d}" for d in range(10)] + ["145", "147"] + [f"15{d}" for d in range(10) if d != 4]
    + ["162", "165", "166", "167"] + [f"17{d}" for d in (0, 1, 2, 3, 5, 6, 7, 8)]
    + [f"18{d}" for d in range(10)] + [f"19{d}" for d in range(10) if d != 4]
)

# ---- divisions -----------------------------------------------------------------------------
# Codes valid in every year first (usable for any birth year), then codes valid since <= 1983.
_always = [d for d in DIVISIONS if d[4] == 0]
_later = [d for d in DIVISIONS if d[4] != 0]
DIV_ORDER = _always + _later
DIV_N_ALWAYS = len(_always)
DIV_N_ALL = len(DIV_ORDER)
DIV_CODES = [d[0] for d in DIV_ORDER]
_NO_PREF = {"市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划"}


def _city_of(d) -> str:
    return d[1] if d[2] in _NO_PREF else d[1] + d[2]


DIV_PLACE = [_city_of(d) + d[3] for d in DIV_ORDER]  # 北京市朝阳区 / 河北省石家庄市正定县
DIV_CITY = [d[1] if d[2] in _NO_PREF else d[2] for d in DIV_ORDER]  # 北京市 / 石家庄市
DIV_COUNTY = [d[3] for d in DIV_ORDER]

# ---- addresses -------------------------------------------------------------------------------
STREET_ROOTS = sorted(set(
    ["人民", "解放", "中山", "建设", "和平", "新华", "胜利", "文化", "光明", "长江", "黄河", "幸福",
     "青年", "东风", "团结", "工业", "友谊", "民主", "复兴", "育才", "花园", "滨河", "站前", "迎宾"]
    + list(_Addr.cities) + list(_Addr.districts)
))
STREET_SUFFIXES = ["路", "街", "大道", "大街", "巷"]
COMMUNITY_SUFFIXES = ["小区", "花园", "家园", "新村", "公寓", "苑"]

# ---- companies ---------------------------------------------------------------------------------
BRANDS = list(_Company.company_prefixes)
BRAND_CHARS = list("华鑫达恒盛泰源通信和瑞丰宏远博创兴嘉德安佳诚美新天正金海汇康宇航星辰启明利隆昌")
INDUSTRIES = ["科技", "贸易", "建筑工程", "餐饮管理", "物流", "电子", "服装", "食品", "机械设备",
              "文化传媒", "房地产开发", "医药", "农业开发", "信息技术", "环保科技", "商贸", "网络科技"]
ENT_TYPES_91 = [
    ("有限责任公司（自然人投资或控股）", "有限公司", 0.55),
    ("有限责任公司（自然人独资）", "有限公司", 0.18),
    ("股份有限公司（非上市、自然人投资或控股）", "股份有限公司", 0.07),
    ("有限责任公司（国有独资）", "有限公司", 0.04),
    ("个人独资企业", "经营部", 0.08),
    ("有限责任公司（外商投资、非独资）", "有限公司", 0.03),
    ("有限合伙企业", "企业（有限合伙）", 0.05),
]
ENT_TYPE_CUM = list(itertools.accumulate(t[2] for t in ENT_TYPES_91))
SHOPS = ["便利店", "小吃店", "五金店", "理发店", "水果店", "服装店", "副食店", "维修部", "烟酒店"]
CROPS = ["蔬菜", "果树", "粮食", "茶叶", "食用菌", "中药材", "花卉", "养殖"]
ENT_STATUSES = [("存续", 0.60), ("在业", 0.25), ("注销", 0.08), ("吊销", 0.05), ("迁出", 0.02)]
ENT_STATUS_CUM = list(itertools.accumulate(s[1] for s in ENT_STATUSES))
TAX_RATINGS = [("A", 0.15), ("B", 0.55), ("M", 0.18), ("C", 0.08), ("D", 0.04)]
TAX_RATING_CUM = list(itertools.accumulate(s[1] for s in TAX_RATINGS))
INSTITUTIONS_12 = ["第{n}中学", "第{n}小学", "人民医院", "疾病预防控制中心", "图书馆", "中医医院",
                   "职业技术学校", "妇幼保健院"]
ASSOCIATIONS_51 = ["{ind}行业协会", "个体劳动者协会", "书法家协会", "老年人体育协会", "{ind}商会"]
PRIVATE_52 = ["{brand}培训学校", "{brand}养老院", "{brand}幼儿园", "{brand}社会工作服务中心"]
