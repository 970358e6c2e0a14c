"""Person names without a model: a reasoned heuristic for English and Chinese.

No light offline NER fits the gateway's budget (spaCy's small English model
costs several milliseconds per kilobyte and drags in a large stack; the only
packaged transformer NER models need torch), so names are found from evidence:

English: runs of capitalised words. A run counts as a name when it carries
enough evidence — a known first name (US Census 1990 list), a known surname,
a surname ending typical of many languages (-ović, -ski, -ova, -sson…), an
honorific before it (Mr., Dr.…), or a cue such as "my name is" / "Dear".
Common capitalised words (weekdays, pronouns, "Street", "Inc"…) break runs.

Chinese: a common surname (single or compound) plus a one- or two-character
given name, only next to a cue: "我叫/姓名：/联系人" before it or a title
("先生/女士/经理…") after it. Without a cue a surname character is far too
often part of an ordinary word.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).parent / "data"

_UPPER = "A-Z\u00c0-\u00d6\u00d8-\u00de" + "".join(chr(c) for c in range(0x100, 0x250) if chr(c).isupper())
_LOWER = "a-z\u00df-\u00f6\u00f8-\u00ff" + "".join(chr(c) for c in range(0x100, 0x250) if chr(c).islower())
_WORD = rf"[{_UPPER}][{_LOWER}]+(?:['\u2019-][{_UPPER}]?[{_LOWER}]+)?"
_PARTICLE = r"(?:de|van|von|der|den|da|di|du|del|della|le|la|bin|al|ter|ten|dos|das)"
_INITIAL = rf"[{_UPPER}]\.?\s"
_RUN = re.compile(rf"(?<![\w{_UPPER}]){_WORD}(?:\s(?:{_INITIAL})?(?:{_PARTICLE}\s)?{_WORD}){{0,3}}(?![\w])")
_HAS_INITIAL = re.compile(rf"\s[{_UPPER}]\.?\s")
_HONORIFIC = re.compile(r"(?i)(?:\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Madam|Mme|Mlle|Herr|Frau|Sr|Sra)\.?\s+)$")
_STRONG_CUE = re.compile(r"(?i)(?:my name is|name is|name:|name\?|named|called|i'm|i am|this is|dear|signed|"
                         r"regards,|sincerely,|cheers,)\s*$")
_CUE_BEFORE = re.compile(r"(?i)(?:hi|hello|thanks|thank you|contact|ask|by|with|from|to|and|partner|guardian|"
                         r"kid|son|daughter|wife|husband|friend|manager|of|starring|directed by:?)\s+$")
_VOCATIVE_AFTER = re.compile(r"^,\s(?:can|could|would|will|please|i|we|thanks|thank|do|did|are|is)\b", re.I)
_SPEAKER_AFTER = re.compile(r"^:\s?\S")
_VERB_AFTER = re.compile(r"^(?:'s\b|\u2019s\b|\s(?:said|says|wrote|writes|is|was|will|has|had|asked|told|called|"
                         r"began|listed|lives|works|joined|arrived|replied)\b)")
_SURNAME_ENDINGS = ("ović", "ovic", "ević", "evic", "ić", "ski", "ska", "sky", "skaya", "ova", "eva", "ov", "ev",
                    "enko", "chuk", "czyk", "wicz", "sson", "sen", "ssen", "berg", "stein", "mann", "escu",
                    "opoulos", "poulos", "akis", "idis", "yan", "ian", "ishvili", "dze", "oğlu", "ová",
                    "ez", "aki", "uchi", "moto", "shima", "mura")
_STOP = frozenset(["way", "land", "fort", "union", "brook", "brooks", "manor", "manors", "mt", "via", "day",
                   "sq", "pass", "heights", "hills", "limited", "name", "phone", "date", "where", "when", "email",
                   "subject", "summary", "result", "status", "title", "description", "notice", "warning", "error",
                   "translation", "step", "billing", "shipping", "personal", "info", "website", "mobile", "fax",
                   "labor", "memorial", "independence", "thanksgiving", "halloween", "ave", "road", "dragon", "golden",
                   "i", "the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "please", "hello",
                   "hi", "hey", "dear", "thanks", "thank", "yes", "no", "ok", "okay", "can", "could", "would",
                   "should", "will", "may", "might", "must", "do", "does", "did", "is", "are", "was", "were",
                   "be", "been", "what", "when", "where", "who", "why", "how", "which", "this", "that",
                   "these", "those", "it", "we", "you", "they", "he", "she", "if", "but", "and", "or", "so",
                   "also", "then", "now", "just", "not", "here", "there", "today", "tomorrow", "yesterday",
                   "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january",
                   "february", "march", "april", "june", "july", "august", "september", "october", "november",
                   "december", "street", "st", "avenue", "ave", "road", "rd", "lane", "ln", "drive", "dr",
                   "apt", "suite", "boulevard", "blvd", "court", "ct", "place", "plaza", "square", "inc",
                   "ltd", "llc", "corp", "co", "company", "group", "bank", "university", "college", "school",
                   "hospital", "city", "county", "state", "north", "south", "east", "west", "new", "old",
                   "great", "saint", "mount", "lake", "river", "park", "hotel", "airport", "station",
                   "america", "american", "english", "french", "german", "chinese", "spanish", "italian",
                   "russian", "british", "europe", "european", "asia", "africa", "australia", "canada",
                   "china", "india", "japan", "mexico", "brazil", "germany", "france", "spain", "italy",
                   "russia", "london", "paris", "york", "washington", "california", "texas", "florida", "sir",
                   "mr", "mrs", "ms", "miss", "dr", "prof", "bot", "user", "admin", "system", "assistant",
                   "customer", "support", "team", "service", "manager", "director", "president", "ceo",
                   "account", "order", "card", "credit", "debit", "email", "phone", "address", "number",
                   "payment", "visa", "mastercard", "amex", "discover", "id", "ssn", "iban", "ip", "api",
                   "key", "password", "note", "important", "update", "urgent", "re", "fwd", "subject", "hello",
                   "goodbye", "regards", "sincerely", "best", "cheers", "love", "god", "christmas", "easter",
                   "internet", "web", "google", "microsoft", "apple", "amazon", "facebook", "twitter",
                   "linkedin", "youtube", "netflix", "spotify", "python", "java", "linux", "windows", "ios",
                   "android", "ai", "gpt", "chatgpt", "llm", "json", "sql", "html", "http", "https", "url",
                   "pdf", "usa", "uk", "eu", "un", "nasa", "fbi", "cia", "covid"])
_ZH_SURNAMES = ["欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "慕容", "令狐", "尉迟", "公孙", "夏侯", "长孙",
                "宇文", "司徒", "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马",
                "朱", "胡", "郭", "何", "高", "林", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓",
                "曹", "彭", "曾", "肖", "田", "董", "袁", "潘", "于", "蒋", "蔡", "余", "杜", "叶", "程", "苏",
                "魏", "吕", "丁", "任", "沈", "姚", "卢", "姜", "崔", "钟", "谭", "陆", "汪", "范", "金", "石",
                "廖", "贾", "夏", "韦", "付", "方", "白", "邹", "孟", "熊", "秦", "邱", "江", "尹", "薛", "闫",
                "段", "雷", "侯", "龙", "史", "陶", "黎", "贺", "顾", "毛", "郝", "龚", "邵", "万", "钱", "严",
                "覃", "武", "戴", "莫", "孔", "向", "汤", "常", "温", "康", "施", "文", "牛", "樊", "葛", "邢",
                "安", "齐", "易", "乔", "伍", "庞", "颜", "倪", "庄", "聂", "章", "鲁", "岳", "翟", "殷", "詹",
                "申", "欧", "耿", "关", "兰", "焦", "俞", "左", "柳", "甘", "祝", "包", "宁", "尚", "符", "舒",
                "阮", "柯", "纪", "梅", "童", "凌", "毕", "单", "季", "裴", "霍", "涂", "成", "苗", "谷", "盛",
                "曲", "翁", "冉", "骆", "蓝", "路", "游", "辛", "靳", "管", "柴", "蒙", "鲍", "华", "喻", "祁",
                "蒲", "房", "滕", "屈", "饶", "解", "牟", "艾", "尤", "阳", "时", "穆", "农", "司", "卓", "古",
                "吉", "缪", "简", "车", "项", "连", "芦", "麦", "褚", "娄", "窦", "戚", "岑", "景", "党", "宫",
                "费", "卜", "冷", "晏", "席", "卫", "米", "柏", "宗", "瞿", "桂", "全", "佟", "应", "臧", "闵",
                "苟", "邬", "边", "卞", "姬", "师", "和", "仇", "栾", "隋", "商", "刁", "沙", "荣", "巫", "寇",
                "桑", "郎", "甄", "丛", "仲", "虞", "敖", "巩", "明", "佘", "池", "查", "麻", "苑", "迟", "邝",
                "官", "封", "谈", "匡", "鞠", "惠", "荆", "乐", "冀", "郁", "胥", "南", "班", "储", "原", "栗",
                "燕", "楚", "鄢", "劳", "谌", "奚", "皮", "粟", "冼", "蔺", "楼", "盘", "满", "闻", "位", "厉",
                "伊", "仝", "区", "郜", "海", "阚", "花", "权", "强", "帅", "屠", "豆", "朴", "盖", "练", "廉",
                "禹", "井", "祖", "漆", "巴", "丰", "支", "卿", "国", "狄", "平", "计", "索", "宣", "晋", "相",
                "初", "门", "云", "容", "敬", "来", "扈", "晁", "芮", "都", "普", "阙", "浦", "戈", "伏", "鹿",
                "薄", "邸", "雍", "辜", "羊", "阿", "乌", "母", "裘", "亓", "修", "邰", "赫", "杭", "况", "那",
                "宿", "鲜", "印", "逯", "隆", "茹", "诸", "战", "慕", "危", "玉", "银", "亢", "嵇", "公", "哈",
                "湛", "宾", "戎", "勾", "茅", "利", "於", "呼", "居", "揭", "干", "但", "尉", "冶", "斯", "元",
                "束", "檀", "衣", "信", "展", "阴", "昝", "智", "幸", "奉", "植", "衡", "富", "尧", "闭", "由"]
_ZH_SURNAME_RX = "|".join(sorted(_ZH_SURNAMES, key=len, reverse=True))
_ZH_TITLES = "先生|女士|小姐|老师|经理|总监|医生|大夫|护士|教授|同学|主任|师傅|律师|警官|阿姨|叔叔|总|工"
_ZH_CUES = r"(?:我叫|我是|名叫|叫做|名字是|姓名[是为:：]?\s*|联系人[是为:：]?\s*|收件人[是为:：]?\s*|收货人[:：]?\s*|" \
           r"持卡人[:：]?\s*|客户|患者|员工|同事|申请人[:：]?\s*|负责人[:：]?\s*|经办人[:：]?\s*|本人)"
# Characters that end a given name: function words, verbs and titles that follow names.
_ZH_STOP = set("的是在和了说先女小老经医同教来去要想给打电手身今明昨已正会也都就请把被让向对与及或还又再很刚从到"
               "为于以等这那你我他她它们吗呢吧啊，。、；：！？ （）()[]【】“”\"'0123456789总工主律警阿叔师护大")
_ZH_FUNCTION = set("的是在和了说吗呢吧啊，。、；：！？ （）()")  # never the first character of a given name
_ZH_NAME = re.compile(rf"{_ZH_CUES}((?:{_ZH_SURNAME_RX})[\u4e00-\u9fff]{{1,2}})"
                      rf"|((?:{_ZH_SURNAME_RX})[\u4e00-\u9fff]{{1,2}}(?=(?:{_ZH_TITLES})))")


@lru_cache(maxsize=1)
def _gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    def read(name: str) -> frozenset[str]:
        lines = (_DATA / name).read_text(encoding="utf-8").splitlines()
        return frozenset(s for s in lines if s and not s.startswith("#"))
    return read("first_names.txt") - _STOP, read("surnames.txt") - _STOP


_ORG_AFTER = re.compile(r"^(?:'s)?\s(?:Inc|Ltd|LLC|Corp|Co|NV|SA|AG|GmbH|PLC|ETF|Limited|Group|Holdings|Bank|Street|"
                        r"St|Road|Rd|Ave|Avenue|Lane|Way|Boulevard|Blvd|Square|Sq|Drive|Court|Place)\b")


def _sentence_start(text: str, i: int) -> bool:
    j = i - 1
    while j >= 0 and text[j] in " \t\"'(“‘":
        j -= 1
    return j < 0 or text[j] in ".!?\n:;"


def _english(text: str) -> list[tuple[int, int, float]]:
    first, last = _gazetteer()
    out: list[tuple[int, int, float]] = []
    for m in _RUN.finditer(text):
        words = [(w.start(), w.end(), w.group(0)) for w in re.finditer(_WORD, m.group(0))]
        # Drop stop words at both edges of the run (and split on inner ones).
        pieces: list[list[tuple[int, int, str]]] = [[]]
        for w in words:
            if w[2].lower().removesuffix("'s").removesuffix("\u2019s") in _STOP:
                pieces.append([])
            else:
                pieces[-1].append(w)
        for piece in pieces:
            if piece:
                span = _score_run(text, m.start() + piece[0][0], m.start() + piece[-1][1],
                                  [p[2].lower() for p in piece], first, last)
                if span:
                    out.append(span)
    return out


def _score_run(text: str, start: int, end: int, toks: list[str], first: frozenset[str],
               last: frozenset[str]) -> tuple[int, int, float] | None:
    before, after = text[max(0, start - 30):start], text[end:end + 12]
    if before.rstrip(" ")[-1:].isdigit() or _ORG_AFTER.match(after):
        return None  # "307 Alvaro Cunqueiro" is an address, "Anheuser Busch NV" a company
    line_start = start == 0 or text[start - 1] == "\n" or before.endswith(("\\n", "}} "))
    evidence = 0.0
    if toks[0] in first:
        evidence += 0.5
    if len(toks) > 1 and toks[-1] in last:
        evidence += 0.4
    if any(t.endswith(_SURNAME_ENDINGS) and len(t) > 4 for t in toks):
        evidence += 0.4
    if _HONORIFIC.search(before):
        evidence += 0.6
    if _STRONG_CUE.search(before):
        evidence += 0.5
    elif _CUE_BEFORE.search(before):
        evidence += 0.2
    if _HAS_INITIAL.search(text, start, end):
        evidence += 0.35
    if line_start and (_SPEAKER_AFTER.match(after) or _VOCATIVE_AFTER.match(after)):
        evidence += 0.5
    if _VERB_AFTER.match(after):
        evidence += 0.15
    if len(toks) > 1:
        evidence += 0.15
    if len(toks) == 1 and _sentence_start(text, start) and not _HONORIFIC.search(before) and not line_start:
        evidence -= 0.1
    if evidence >= 0.5:
        return start, end, min(0.95, 0.4 + evidence / 2)
    return None


def _chinese(text: str) -> list[tuple[int, int, float]]:
    out = []
    for m in _ZH_NAME.finditer(text):
        g = 1 if m.group(1) else 2
        s, e = m.start(g), m.end(g)
        # Trim a trailing character that is a function word or the start of a title.
        while e - s > 2 and (text[e - 1] in _ZH_STOP or re.match(_ZH_TITLES, text[e - 1:])):
            e -= 1
        if e - s >= 2 and text[s + 1] not in _ZH_FUNCTION:
            out.append((s, e, 0.8))
    return out


def find_person_names(text: str) -> list[tuple[int, int, float]]:
    """``(start, end, score)`` for each person name found in English or Chinese text."""
    spans = _english(text) if re.search(f"[{_UPPER}]", text) else []
    if re.search(r"[\u4e00-\u9fff]", text):
        spans += _chinese(text)
    return spans
