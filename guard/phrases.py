"""Phrase patterns of prompt-injection families, in several languages.

Patterns run on normalised text (:mod:`.normalize`: lower case, no accents,
ASCII look-alikes folded, traditional Chinese folded for common characters).
Each family has a weight: the evidence one match gives that the text is an
attack. A family whose ``indirect`` flag is set is an instruction aimed at a
model reading *content* (tool output, documents, agent output); it weighs
less in user input, where people legitimately give instructions.

Languages: English, Chinese, German, French, Spanish, Italian, Portuguese,
Russian (Cyrillic folds to Latin look-alikes only where letters match, so the
Russian patterns are written in folded form), Japanese.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_OBJ = (r"(?:instructions?|instruction sets?|rules|guidelines|directives?|prompts?|commands?|context|polic(?:y|ies)"
        r"|constraints|programming|guardrails|restrictions|system (?:prompt|message)|training|orders)")
_PREV = r"(?:previous|prior|above|earlier|preceding|all|any|every|your|the|system|original|initial|existing|old)"
_ZH_OBJ = r"(?:指令|指示|规则|说明|提示词?|设定|要求|限制|约束|命令|规定|准则|守则|政策|安全策略)"


@dataclass(frozen=True, slots=True)
class Family:
    """One family of attack phrasing: a compiled pattern, its weight and its anchors.

    ``anchors`` are words (Latin tokens) and ``cjk`` substrings of which every
    match contains at least one: the pattern only runs when one is present,
    which keeps a scan of ordinary text to a set intersection.
    """

    name: str
    weight: float
    pattern: re.Pattern[str]
    anchors: frozenset[str]
    cjk: tuple[str, ...]
    indirect: bool = False

    def may_match(self, tokens: set[str], text: str, has_cjk: bool) -> bool:
        return not self.anchors.isdisjoint(tokens) or (
            has_cjk and self.cjk_rx is not None and self.cjk_rx.search(text) is not None)

    @property
    def cjk_rx(self) -> re.Pattern[str] | None:
        return _cjk_rx(self.cjk)


@lru_cache(maxsize=64)
def _cjk_rx(anchors: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(map(re.escape, anchors))) if anchors else None


def _f(name: str, weight: float, anchors: str, *patterns: str, indirect: bool = False) -> Family:
    words = anchors.split()
    return Family(name, weight, re.compile("|".join(f"(?:{p})" for p in patterns), re.M),
                  frozenset(w for w in words if w.isascii()), tuple(w for w in words if not w.isascii()), indirect)


FAMILIES: tuple[Family, ...] = (
    _f("override", 0.9,
       "ignore disregard forget skip bypass override overrule abandon drop discard neglect stop "
       "ignoriere ignorier vergiss vergesst missachte uberspringe ignorez ignorer oublie oubliez oublier ignora "
       "ignoren olvida olvide olviden omite ignorate dimentica dimenticate trascura esqueca esquece desconsidere "
       "忽略 无视 忘记 忘掉 不要理会 不用理会 别理 抛开 抛弃 放弃 跳过 不再遵守 不要遵守 "
       "别管 违背 推翻 игнорируй забудь npoигнopиpyй забyдь 無視 忘れ",
       rf"\b(?:ignore|disregard|forget|skip|bypass|override|overrule|abandon|drop|discard|neglect|stop following)"
       rf"\b[^.\n]{{0,40}}?\b{_PREV}\b[^.\n]{{0,25}}?\b{_OBJ}",
       r"\b(?:ignore|disregard|forget)\s+(?:everything|all)\s+(?:above|before|prior|previously|we discussed|"
       r"you were told|you know)",
       r"\b(?:ignore|disregard)\s+(?:the|your)\s+(?:user|operator|developer)(?:'s)?\b",
       rf"(?:忽略|无视|忘记|忘掉|不要理会|不用理会|别理|抛开|抛弃|放弃|跳过|不再遵守|不要遵守|别管|违背|推翻)[了掉]?"
       rf"[^。\n]{{0,12}}?{_ZH_OBJ}",
       r"(?:忘记|忘掉|忽略)(?:我们)?(?:之前|以上|上面|前面)?(?:说|聊|讨论)?(?:过)?的?(?:一切|所有|全部)",
       r"\b(?:ignoriere|ignorier|vergiss|vergesst|missachte|uberspringe)\b[^.\n]{0,40}"
       r"(?:anweisungen|regeln|richtlinien|vorgaben|instruktionen|alles|systemanweisungen)",
       r"\b(?:ignore|ignorez|ignorer|oublie|oubliez|oublier)\b[^.\n]{0,40}(?:instructions|regles|consignes|directives)",
       r"\b(?:ignora|ignore|ignoren|olvida|olvide|olviden|omite)\b[^.\n]{0,40}"
       r"(?:instrucciones|reglas|directrices|indicaciones|normas)",
       r"\b(?:ignora|ignorate|dimentica|dimenticate|trascura)\b[^.\n]{0,40}(?:istruzioni|regole|direttive)",
       r"\b(?:ignore|ignora|esqueca|esquece|desconsidere)\b[^.\n]{0,40}(?:instrucoes|regras|diretrizes)",
       r"(?:игнорируй|забудь|npoигнopиpyй|забyдь)[^.\n]{0,40}(?:инструкции|правила| инcтpyкции|пpaвилa)",
       r"(?:以前|前|上記|これまで)の?(?:指示|命令|ルール)を?(?:無視|忘れ)"),
    _f("new_rules", 0.65,
       "now new supersede supersedes changed updated lifted removed system real true actual jetzt sofort neue "
       "desormais maintenant ahora adelante ora 从现在 指令 任务 规则 指示 你的新 你的真正 你的实际",
       r"\bfrom now on,?\s+(?:you|respond|answer|act|reply|ignore|forget)\b",
       r"\b(?:your )?new (?:instructions?|directive|task|rules|role|purpose|objective)\s*(?::|is\b|are\b|supersede)",
       r"\bsupersedes? (?:all |any )?(?:prior|previous|earlier|other)",
       r"\b(?:rules|guidelines|instructions|policy) (?:have|has) (?:changed|been (?:updated|changed|lifted|removed))",
       r"\b(?:important |urgent )?system (?:update|override|notice|alert)\s*:",
       r"\byour (?:real|true|actual) (?:task|job|goal|purpose|instructions?) (?:is|are)\b",
       r"从现在(?:开始|起)[,，]?\s*你", r"(?:新的?|最新)(?:指令|任务|规则|指示)\s*[:：是]",
       r"你的(?:新|真正的?|实际的?)(?:任务|指令|身份|目标)",
       r"\bab (?:jetzt|sofort)\b[^.\n]{0,30}\bdu\b", r"\bneue anweisungen\b",
       r"\b(?:desormais|a partir de maintenant)\b", r"\b(?:a partir de ahora|de ahora en adelante)\b",
       r"\b(?:d'ora in poi|da ora in poi|ora sei)\b"),
    _f("no_limits", 0.8,
       "restriction restrictions limits limitations rules filter filters policy policies guidelines censorship "
       "safety moral ethics boundaries unrestricted uncensored unfiltered unlimited jailbreak jailbroken jailbreaked "
       "jailbrok jailbroke mode anything dan comply complies grant refuse decline say regeln einschrankungen "
       "grenzen richtlinien "
       "uneingeschrankt uneingeschrankte uneingeschrankter restrictions limites filtres regles restricciones "
       "filtros reglas desarrollador desenvolvedor sviluppatore restrizioni limiti filtri regole restricoes "
       "filtro regras ограничений фильтров правил "
       "限制 约束 过滤 审查 规则 道德 安全准则 内容政策 开发者模式 越狱 无限制 上帝模式 "
       "管理员模式 调试模式 问题 请求 要求 制限",
       r"\b(?:no|without(?: any)?|free of|zero|free from)\s+(?:content\s+)?(?:restrictions?|limits|limitations|rules|"
       r"filters?|polic(?:y|ies)|guidelines|censorship|safety|moral|ethics|boundaries)\b",
       r"\b(?:unrestricted|uncensored|unfiltered|unlimited|jailbr[eo]a?k(?:en|ed)?)\b",
       r"\b(?:developer|dev|god|debug|admin|dan|sudo|maintenance) mode\b", r"\bdo anything now\b",
       r"\byou are (?:now )?dan\b", r"\b(?:answer|respond to|do) (?:any|every)\s?(?:thing|question)\b[^.\n]{0,20}"
       r"(?:without|no|limits|filter|freely)",
       r"\b(?:comply|complies) (?:fully |with (?:every|any|all) (?:request|command|instruction))",
       r"\bwill do anything\b", r"\b(?:never|don't|do not|must not|won't) (?:refuse|decline|say no)\b",
       r"\bgrant (?:all|every|this user) (?:requests?|admin)",
       r"(?:没有|不受|无|解除|取消|去掉|摆脱|移除|不存在)(?:任何)?(?:的)?(?:限制|约束|过滤|审查|规则|道德|安全准则|内容政策)",
       r"开发者模式|越狱|无限制模式|上帝模式|管理员模式|调试模式",
       r"(?:回答|满足|答应)(?:任何|所有|一切)(?:问题|请求|要求)",
       r"\b(?:keine|ohne)\s+(?:regeln|einschrankungen|grenzen|filter|richtlinien)\b", r"\buneingeschrankt",
       r"\bsans (?:restrictions?|limites?|filtres?|regles)\b", r"\bsin (?:restricciones|limites|filtros?|reglas)\b",
       r"\bmodo (?:desarrollador|desenvolvedor|sviluppatore)\b", r"\bsenza (?:restrizioni|limiti|filtri|regole)\b",
       r"\bsem (?:restricoes|limites|filtros|regras)\b", r"без (?:ограничений|фильтров|правил)",
       r"制限(?:なし|のない|を解除)"),
    _f("persona", 0.35,
       "pretend imagine now longer act behave respond roleplay bist es etes eres estas sei "
       "假装 扮演 假设 想象 你现在",
       r"\b(?:pretend|imagine) (?:you are|you're|to be)\b", r"\byou are (?:now|no longer)\b",
       r"\b(?:act|behave|respond) as (?:if you (?:are|were|have)|an? "
       r"(?:ai|assistant|model|unrestricted|uncensored|evil))",
       r"\broleplay as\b", r"(?:假装|扮演|假设|想象)你(?:是|为|现在是)", r"你现在(?:是|已经是|不再是)",
       r"\bdu bist (?:jetzt|nun)\b", r"\b(?:tu es|vous etes) (?:maintenant|desormais)\b",
       r"\b(?:ahora eres|ahora estas)\b", r"\bora sei\b"),
    _f("prompt_leak", 0.85,
       "prompt instructions instruction message messages context configuration rules verbatim word written above "
       "preprompt pre systemanweisungen anweisungen instrucciones istruzioni instrucoes "
       "系统提示 系统指令 系统消息 初始指令 初始提示 隐藏 你的提示词 你的 给你的 "
       "原文照搬 原封不动 你收到的 システムプロンプト",
       r"\b(?:reveal|show|print|output|repeat|display|leak|dump|tell|give|share|recite|expose|write out|return|list)"
       r"\b[^.\n]{0,40}\b(?:system (?:prompt|message|instructions?)|initial (?:instructions|prompt)|hidden (?:prompt|"
       r"instructions?)|developer (?:message|instructions)|(?:instructions|prompt|rules) you (?:were|have been) given"
       r"|operating instructions|context window|internal (?:configuration|instructions|rules)|pre-?prompt)",
       r"\b(?:prompt|instructions?|rules)\b[^.\n]{0,20}\b(?:verbatim|word for word|word-for-word)",
       r"\brepeat (?:the|all|everything|the words) (?:words )?(?:above|before)", r"\bwhat was written above\b",
       r"\bexact instructions you were given\b",
       r"\b(?:instructions|prompt|rules)\b[^.\n]{0,12}\b(?:were you|you were|you've been|have you been) given\b",
       r"\b(?:print|show|output|repeat|display)\b[^.\n]{0,30}\b(?:everything|all|text|words)\b[^.\n]{0,30}"
       r"\b(?:before|above) (?:my|this|the) (?:first )?(?:message|conversation|prompt)",
       r"\bsummary of (?:the|your) (?:operating|system|initial|hidden) instructions\b",
       r"(?:开发者|系统|管理员)给你的[^。\n]{0,6}(?:指令|提示|设定|规则)", r"原文照搬|原封不动地?(?:输出|告诉|复述)",
       r"(?:系统提示词?|系统指令|系统消息|初始指令|你的提示词|你收到的(?:指令|提示|消息|系统消息))[^。\n]{0,15}"
       r"(?:复述|重复|输出|显示|打印|告诉我)",
       rf"(?:显示|输出|告诉我|泄露|透露|打印|重复|展示|给我看|公开|复述|说出|发给我)[^。\n]{{0,15}}"
       rf"(?:系统提示词?|系统指令|系统消息|初始指令|初始提示|隐藏的?(?:提示|指令)|你的(?:提示词|{_ZH_OBJ}|设定))",
       r"(?:系统提示词?|系统指令|初始指令|你的提示词)[^。\n]{0,15}(?:逐字|原文|完整|全部)",
       r"\b(?:zeige|verrate|gib|nenne)\b[^.\n]{0,30}(?:system-?prompt|systemanweisungen|anweisungen)",
       r"\b(?:revele|revelez|reveler|montre|montrez|affiche|donne)\b[^.\n]{0,30}(?:prompt|instructions)",
       r"\b(?:revela|muestra|muestrame|dime|ensename)\b[^.\n]{0,30}(?:prompt|instrucciones)",
       r"\b(?:rivela|mostra|mostrami|dimmi)\b[^.\n]{0,30}(?:prompt|istruzioni)",
       r"\b(?:revele|mostre|me diga)\b[^.\n]{0,30}(?:prompt|instrucoes)",
       r"システムプロンプトを?(?:表示|教え|出力)"),
    _f("role_tokens", 0.8,
       "im_start im_end endoftext inst sys system assistant end thinking instruction instructions "
       "systemhinweis note nota 系统",
       r"<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>", r"\[/?inst\]", r"<<\s*sys\s*>>",
       r"^\s*\[?(?:system|sys)\]?\s*[:\]]", r"\[system\]", r"^#{2,}\s*(?:system|instruction|new instructions?)\b",
       r"\bend of (?:user input|document|prompt|context|conversation|instructions)\b",
       r"</?(?:system|thinking|instructions?)>", r"^\s*assistant\s*:\s*(?:sure|ok|certainly|here)",
       r"[【\[]系统[】\]]", r"^\s*系统\s*[:：]", r"^\s*systemhinweis\s*:", r"^\s*note systeme\s*:",
       r"^\s*nota del sistema\s*:", r"^\s*nota di sistema\s*:"),
    _f("exfiltration", 0.75,
       "customer customers user client credentials credential password passwords api keys secrets secret "
       "tokens token database records data list emails email environment externally private confidential "
       "internal admin donnees clients daten 客户 用户 密码 密钥 凭证 数据库 数据 资料 名单 记录 通讯录 环境变量",
       r"\b(?:send|e-?mail|forward|post|upload|transmit|exfiltrate|copy|leak|deliver)\b[^.\n]{0,60}\b(?:customer|"
       r"user|client|credentials?|passwords?|api keys?|secrets?|tokens?|database|records|order data|data|list|"
       r"emails?|environment variables)\b[^.\n]{0,50}\b(?:to|at)\b\s*(?:\S+@\S+|https?://|external|an? external)",
       r"\b(?:forward|send)\b[^.\n]{0,40}\bexternally\b",
       r"\b(?:collect|gather|dump|extract|harvest)\b[^.\n]{0,40}\b(?:credentials|api keys|passwords|secrets|"
       r"customer (?:data|emails|list)|environment variables|private keys)",
       r"\blist (?:all|every)\b[^.\n]{0,30}\b(?:credentials|api keys|passwords|secrets|environment variables|"
       r"private keys|users?'s? (?:e-?mails?|passwords|phone numbers))",
       r"把[^。\n]{0,20}(?:客户|用户|密码|密钥|凭证|数据库|数据|资料|名单|记录|通讯录)[^。\n]{0,10}"
       r"(?:发送|发到|发给|转发|上传|导出)[^。\n]{0,20}(?:@|http|外部|邮箱|服务器)",
       r"\b(?:reveal|leak|share|expose|disclose|output)\b[^.\n]{0,30}\b(?:credentials|api keys|passwords|"
       r"admin password|confidential data|internal data|private data|raw customer)",
       r"(?:发送|发到|发给|转发|上传|导出|泄露|外传)[^。\n]{0,30}(?:客户|用户|密码|密钥|凭证|数据库|数据|资料|名单|记录|通讯录)"
       r"[^。\n]{0,30}(?:@|http|外部|邮箱|服务器)",
       r"(?:收集|获取|导出|列出)[^。\n]{0,20}(?:所有)?(?:用户|客户)?(?:的)?(?:密码|密钥|凭证|api ?key|环境变量)",
       r"\b(?:envoie|envoyez|rassemble)\b[^.\n]{0,60}(?:donnees|clients)", r"\bgibst du alle internen daten\b",
       r"\binternen daten preis\b"),
    _f("tool_call", 0.55,
       "call use invoke run execute trigger 调用",
       r"\b(?:call|use|invoke|run|execute|trigger)\s+(?:the\s+)?`?[a-z]+_[a-z_]+\b(?!\s*\()`?",
       r"调用\s*`?[a-z]+_[a-z_]+", indirect=True),
    _f("addressed_to_ai", 0.7,
       "ai llm bot bots assistant assistants model models agent agents chatbot "
       "ai 人工智能 智能助手 大模型 语言模型 机器人 助手",
       r"\b(?:note|message|instructions?|notice|reminder|memo)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?"
       r"(?:ai|bot|assistant|model|llm|agent|chatbot|language model)s?\b",
       r"\bif you are an? (?:ai|llm|language model|assistant|bot|agent)\b",
       r"\b(?:ai|llm) (?:agents?|assistants?|systems?|models?|coding agents?) (?:reading|processing|reviewing|"
       r"integrating|summari[sz]ing|parsing|should)\b",
       r"\b(?:to|for) (?:any|all) ai\b", r"\b(?:ai|assistant|bot) reading this\b",
       r"\bimportant for the (?:assistant|ai|model)\b", r"\bto the bot\b",
       r"(?:如果你是|致|给|写给|对)(?:一个|任何)?(?:ai|人工智能|智能助手|大模型|语言模型|机器人|助手)",
       r"(?:ai|人工智能|大模型)(?:助手|代理|系统)?(?:在)?(?:阅读|处理|总结)(?:此|这|本)", indirect=True),
    _f("safety_off", 0.8,
       "safety security content exempt permission override confidentiality compromised invalid void revoked "
       "sicherheitsrichtlinien securite seguridad sicurezza 安全 内容",
       r"\b(?:safety|security|content) (?:protocols?|guidelines|checks|rules|filters?|polic(?:y|ies)|restrictions|"
       r"measures)\b[^.\n]{0,20}\b(?:disabled|off|suspended|lifted|removed|not meant|do not apply|don't apply|"
       r"no longer apply|compromised|are void|deactivated)",
       r"\b(?:skip|bypass|disable|ignore|turn off|circumvent|deactivate)\b[^.\n]{0,15}\b(?:safety|security|content)"
       r" (?:checks|rules|filters?|guidelines|protocols|polic(?:y|ies)|confirmations)",
       r"\bexempt from (?:the |all |any )?(?:usual |normal )?(?:restrictions|rules|polic)",
       r"\b(?:granted|given) permission to skip\b", r"^\s*override\s*:", r"\bdisregard (?:the|your)\b[^.\n]{0,30}"
       r"(?:content|safety|confidentiality) polic", r"\b(?:developer|system) (?:messages|instructions)\b[^.\n]"
       r"{0,40}\b(?:compromised|invalid|void|revoked)",
       r"(?:安全|内容)(?:协议|策略|规则|检查|限制|审查|准则)(?:已|已经|都)?(?:被)?(?:关闭|禁用|解除|失效|不适用|取消)",
       r"(?:跳过|绕过|关闭|禁用|忽略)(?:所有|全部)?(?:的)?(?:安全|内容)(?:检查|过滤|限制|审查|策略|规则)",
       r"sicherheitsrichtlinien[^.\n]{0,30}nicht gelten", r"regles de securite ne s'appliquent pas",
       r"reglas de seguridad no (?:aplican|se aplican)", r"linee guida di sicurezza non valgono"),
    _f("persistence", 0.55,
       "token code string marker tag reference memory future verbatim next jeton codice codigo id summary reply "
       "response answer report review "
       "记住 保存 存入 写入 每次 每个 每条 所有",
       r"\b(?:append|add|include|insert|attach|put)\b[^.\n]{0,50}\b(?:token|code|string|marker|tag|reference)\b"
       r"[^.\n]{0,60}\b(?:every|each|all|any|end of|future|your)\b[^.\n]{0,15}\b(?:repl(?:y|ies)|responses?|answers?"
       r"|summar(?:y|ies)|outputs?|messages?|reports?|reviews?)",
       r"\b(?:must|should) (?:include|append|add)\b[^.\n]{0,40}\b(?:verification|confirmation|reference|tracking)"
       r" (?:code|token|id)",
       r"\b(?:save|store|remember|persist|write)\b[^.\n]{0,40}\b(?:long-term memory|your memory|to memory|"
       r"future (?:turns|tasks|replies|sessions|reports))",
       r"\brepeat it verbatim in every\b",
       r"\b(?:include|append|add|put)\s+(?:the|this)\s+[a-z_-]+(?: (?:id|code|token|reference))?(?: shown above)?\s+"
       r"(?:in|to|at the end of)\s+your\s+(?:summary|reply|response|answer|report|review)",
       r"\b(?:on|in) (?:the|every) next (?:user )?message\b",
       r"(?:记住|保存|存入|写入)[^。\n]{0,20}(?:记忆|以后|今后|之后的?每|所有后续)",
       r"(?:每次|每个|每条|所有)(?:的)?(?:回复|回答|总结|摘要|报告)[^。\n]{0,10}(?:都|末尾|最后|结尾)[^。\n]{0,6}"
       r"(?:附上|加上|包含|带上|添加)",
       r"\b(?:token|code|jeton|codice|codigo)\b[^.\n]{0,50}\b(?:angehangt|anzuhangen|ajoute|anadirse|aggiunto)",
       indirect=True),
    _f("decode_follow", 0.7,
       "base64 base32 rot13 hex binary encoded cipher string morse hidden decoded secret decode decoding "
       "解码 解密 翻译 转换",
       r"\b(?:decode|decipher|translate|convert|read|unscramble)\b[^.\n]{0,50}\b(?:base64|base32|rot13|hex|binary|"
       r"encoded|cipher|string|morse)\b[^.\n]{0,60}\b(?:follow|do (?:exactly )?what it says|execute|obey|comply|"
       r"carry out|run it|act on|then do)",
       r"\b(?:follow|execute|obey|carry out)\b[^.\n]{0,15}\b(?:hidden|encoded|decoded|secret) (?:instructions?|"
       r"commands?|message)",
       r"\b(?:decode|decoding)\b[^.\n]{0,30}\b(?:follow|execute|do what it says)",
       r"(?:解码|解密|翻译|转换)[^。\n]{0,20}(?:base64|rot13|编码|密文|十六进制|二进制)[^。\n]{0,30}(?:执行|照做|照着做|遵循|服从|按)"),
    _f("forged_reasoning", 0.6,
       "determined concluded reasoned verified established thinking reasoning safety stabilito festgestellt "
       "etabli determinado 我已经 我已",
       r"\b(?:i have|i've|assistant has)\s+(?:already\s+)?(?:determined|concluded|reasoned|verified|established)\b"
       r"[^\n]{0,120}\b(?:restrictions?|guidelines|policy|rules|safety|exempt|comply|authori[sz]ed|without)",
       r"<thinking>", r"\breasoning trace\b", r"\bsafety guidelines were not meant\b",
       r"\b(?:ho gia stabilito|habe ich bereits festgestellt|j'ai deja etabli|ya he determinado)\b",
       r"(?:我已经|我已)(?:确认|判断|推理|验证)[^。\n]{0,40}(?:限制|规则|安全|政策|豁免)"),
    _f("destructive", 0.5,
       "delete remove wipe erase drop truncate empty rm 删除 清空 格式化",
       r"\b(?:delete|remove|wipe|erase|drop|truncate|empty)\b[^.\n]{0,30}\b(?:all (?:files|records|data)|database|"
       r"\.db\b|output directory|the repository|customers?\b|/var/|\./dist|\./build|table)",
       r"\brm -rf\b", r"\bdrop table\b", r"(?:删除|清空|格式化)[^。\n]{0,15}(?:所有|全部|数据库|目录|文件)",
       indirect=True),
)
