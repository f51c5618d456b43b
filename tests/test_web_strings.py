"""The pages' interface strings: every text a page shows comes from web/i18n.js in both
Russian and English, so no hard-coded English is left behind (the browser tests check that
the language follows the browser; this checks the sources are complete, without one)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "web"
PAGES = ("index.html", "realtime.html", "obs.html")
KEY = r"[a-z0-9][a-z0-9.\-]*"
SYMBOLS = re.compile(r"^[\s\d/–\-→·:]*$")
"""Text that needs no translation: numbers, dashes, arrows."""


def dictionaries() -> dict[str, set[str]]:
    """The keys of each language's table in web/i18n.js."""
    source = (WEB / "i18n.js").read_text()
    tables: dict[str, set[str]] = {}
    for lang in ("en", "ru"):
        start = source.index(f"    {lang}: {{")
        end = source.index("\n    },", start)
        tables[lang] = set(re.findall(rf'^\s+"({KEY})":', source[start:end], re.M))
    return tables


class _Texts(HTMLParser):
    """Text nodes of a page that no data-i18n element (or script/style) covers."""

    SKIP = ("script", "style", "title")

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.bare: list[str] = []
        self.keys: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        keys = [v for k, v in named.items() if k.startswith("data-i18n") and v]
        self.keys += keys
        if tag in ("meta", "link", "input", "br", "img"):  # void elements
            return
        covered = "data-i18n" in named or tag in self.SKIP
        self.stack.append((tag, covered))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if any(covered for _, covered in self.stack) or SYMBOLS.match(data):
            return
        self.bare.append(data.strip())


def test_both_languages_have_the_same_keys() -> None:
    tables = dictionaries()
    assert len(tables["en"]) > 100
    assert tables["en"] == tables["ru"], tables["en"] ^ tables["ru"]


def test_every_page_text_is_translated() -> None:
    known = dictionaries()["en"]
    for page in PAGES:
        parser = _Texts()
        parser.feed((WEB / page).read_text())
        assert parser.bare == [], f"{page}: untranslated text {parser.bare}"
        missing = set(parser.keys) - known
        assert not missing, f"{page}: keys missing from web/i18n.js: {missing}"


def test_every_key_the_scripts_ask_for_exists() -> None:
    known = dictionaries()["en"]
    # Any string literal shaped like a key: t("a"), t(on ? "a" : "b"), data-i18n="a" ...
    prefixes = "|".join(sorted({k.split(".")[0] for k in known}))
    shaped = re.compile(rf'"((?:{prefixes})\.[a-z0-9][a-z0-9.\-]*)"')
    asked: set[str] = set()
    for script in WEB.glob("*.js"):
        if script.name != "i18n.js":
            asked |= set(shaped.findall(script.read_text()))
    assert len(asked) > 50
    assert not asked - known, asked - known


def test_scripts_do_not_write_english_into_the_page() -> None:
    """A literal English sentence assigned to textContent is the usual way one slips in."""
    literal = re.compile(r"""textContent\s*=\s*["'`][A-Za-z][^"'`]*\s[^"'`]*["'`]""")
    for script in WEB.glob("*.js"):
        found = literal.findall(script.read_text())
        assert not found, f"{script.name}: {found}"
