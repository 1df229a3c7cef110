"""
The HTML check (mailsink.checks.html_check, html_document, html_features, css, caniemail):
realistic emails (a table-based newsletter, a flexbox/grid layout, a <style> sheet with
media queries and pseudo-classes, SVG and image formats, a form, scripts) checked for the
warnings they should raise, their counts and scores; Mailpit's node count and overall
score; the shipped data and the script that refreshes it.

Expected percentages are computed here from the shipped JSON by the rule the README states
(a bare y is supported, a bare n unsupported, u left out, anything else partial), so the
tests hold across a data refresh.
"""

from __future__ import annotations

import configparser
import importlib.machinery
import importlib.util
import json
import os
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from mailsink.checks import css
from mailsink.checks.html_check import check_html, html_check
from mailsink.checks.html_document import read_document
from mailsink.checks.html_features import FEATURES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_FILE = os.path.join(ROOT, "mailsink", "checks", "data", "caniemail.json")
with open(DATA_FILE, encoding="utf-8") as _stream:
    DATA = json.load(_stream)
ENTRIES = {entry["slug"]: entry for entry in DATA["data"]}


def shares(slug: str) -> dict[str, float]:
    """Supported, Partial, Unsupported of a feature, straight from the JSON."""
    values = [value for family in ENTRIES[slug]["stats"].values()
              for versions in family.values() for value in versions.values()
              if not value.startswith("u")]
    yes = sum(value == "y" for value in values)
    no = sum(value == "n" for value in values)
    return {"Supported": 100 * yes / len(values), "Unsupported": 100 * no / len(values),
            "Partial": 100 * (len(values) - yes - no) / len(values)}


def found(report: dict[str, Any]) -> dict[str, int]:
    return {warning["Slug"]: warning["Score"]["Found"] for warning in report["Warnings"]}


def expected_total(counts: dict[str, int], nodes: int) -> dict[str, float]:
    """Mailpit's overall score for warnings with these counts (weights capped at 1)."""
    partial = unsupported = 0.0
    for slug, count in counts.items():
        weight = min(1.0, count / nodes) if nodes else 1.0
        score = ({"Partial": 0.0, "Unsupported": 100.0} if slug == "html-script"
                 else shares(slug))
        partial = max(partial, score["Partial"] * weight)
        unsupported = max(unsupported, score["Unsupported"] * weight)
    return {"Supported": round(max(0.0, 100 - partial - unsupported), 2),
            "Partial": round(partial, 2), "Unsupported": round(unsupported, 2)}


NEWSLETTER = """\
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
  "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>November news</title>
<!--[if mso]><style type="text/css">td { font-family: Arial !important; }</style><![endif]-->
<style type="text/css">
  body { margin: 0; padding: 0; }
  img { border: 0; display: block; }
  @media only screen and (max-width: 600px) {
    .container { width: 100% !important; }
    .stack { display: block !important; width: 100% !important; }
  }
</style>
</head>
<body style="margin:0; padding:0; background-color:#f4f4f4;">
<table role="presentation" width="100%" border="0" cellpadding="0" cellspacing="0"
       bgcolor="#f4f4f4">
 <tr><td align="center">
  <table class="container" role="presentation" width="600" border="0" bgcolor="#ffffff">
   <tr><td style="padding: 20px 30px;"><img src="https://cdn.shop.example.com/logo.gif"
       width="120" height="40" alt="Shop"></td></tr>
   <tr>
    <td class="stack" width="300" valign="top" style="padding: 0 30px; font-family: Arial,
        sans-serif; font-size: 16px; line-height: 24px; color: #333333;">
      <h1 style="margin: 0 0 12px 0; font-size: 24px;">November news</h1>
      <p style="margin: 0;">Three new products for the cold days.</p>
    </td>
    <td class="stack" width="300" valign="top" style="padding: 0 30px;"><img
        src="https://cdn.shop.example.com/product.jpg" width="240" height="240" alt="Boots">
    </td>
   </tr>
   <tr><td style="padding: 30px; text-align: center;"><a
       href="https://shop.example.com/unsubscribe"
       style="color: #888888; text-decoration: underline;">Unsubscribe</a></td></tr>
  </table>
 </td></tr>
</table>
</body>
</html>
"""
"""As an email builder writes one: nested tables, attributes, inline styles, a media query
for phones, and an Outlook-only style sheet in a conditional comment."""

NEWSLETTER_NODES = 19
"""title, style, body, 2 tables, 4 tr, 6 td, 2 img, h1, p, a (html, head, meta: not)."""

MODERN = """\
<div style="display: flex; gap: 16px; justify-content: space-between;">
  <div style="position: relative; background-image: linear-gradient(90deg, #fff,
              rgba(0, 0, 0, .1));">
    <span style="position: absolute; top: 0; z-index: 2;">New</span>
  </div>
  <div style="display: grid; grid-template-columns: repeat(2, 1fr);
              width: calc(100% - 2rem); --accent: #c00; color: var(--accent);">Grid</div>
</div>
<p style='content: "display:flex; position:fixed"; font-family: "z-index: 1"'>decoy</p>
<p style="/* display:grid */ color: red; background: url(https://x.example/a.png?position:1)"
   >decoy 2</p>
"""
"""A web developer's layout: flexbox, grid, positioning, custom properties; and decoys (in
strings, a comment, a URL) that name features without using them."""

SHEET = """\
<html><head><style>
@import url("https://fonts.example.com/css?family=Inter");
@font-face { font-family: "Inter"; src: url(https://fonts.example.com/inter.woff2); }
@media (prefers-color-scheme: dark) {
  .card { background: #111111 !important; color: #eeeeee !important; } }
@media screen and (max-width: 480px) { .card { padding: 8px; } }
@supports (display: grid) { .grid { display: grid; } }
@keyframes pulse { from { opacity: 1; } to { opacity: .5; } }
a:hover, a:focus { color: #cc0000; }
li:nth-child(2n+1) { background: #fafafa; }
p:first-child::first-line { font-weight: bold; }
.badge:before { content: "\\2605"; }
.note::after { content: ":hover ::before"; }
input::placeholder { color: #999999; }
</style></head><body><div class="card"><p>Hello</p></div></body></html>
"""

IMAGES = """\
<p><svg width="24" height="24" viewBox="0 0 24 24"><circle cx="12" cy="12" r="10"
   fill="#cc0000"/></svg> Sale</p>
<img src="https://cdn.example.com/hero.webp" alt="">
<img src="https://cdn.example.com/icon.SVG?v=3#x" alt="">
<img src="data:image/png;base64,iVBORw0KGgo=" alt="">
<img src="https://cdn.example.com/anim.gif" alt="">
<img src="https://cdn.example.com/photo.avif" alt="">
<img src="https://cdn.example.com/photo.jpg" alt="">
<img src="https://cdn.example.com/map.png" usemap="#m" alt="">
<map name="m"><area shape="rect" coords="0,0,10,10" href="#top"></map>
<picture><source srcset="a.webp" type="image/webp"><img src="a.png" srcset="a2.png 2x"
  alt=""></picture>
<a href="#top">Top</a>
"""

FORM = """\
<form action="https://shop.example.com/poll" method="post">
<input type="radio" name="r" value="1" required> <input type="radio" name="r" value="2">
<input type="checkbox" name="c"> <input name="email"> <input type="TEXT" name="n">
<input type="hidden" name="t" value="x">
<select name="s"><option>a</option></select><textarea name="m"></textarea>
<input type="submit" value="Vote"> <button type="reset">Reset</button>
<button type="submit">Send</button>
</form>
"""


class NewsletterTests(TestCase):
    def setUp(self) -> None:
        self.report = check_html(NEWSLETTER)

    def test_warnings_and_counts(self) -> None:
        self.assertEqual(found(self.report), {
            "html-body": 1, "html-style": 1, "css-at-media": 1,
            "css-important": 3,  # not the one in Outlook's conditional comment
            "html-width": 6, "html-height": 2,
            "css-background-color": 3,  # two bgcolor attributes and one property
            "css-border": 3,  # two border attributes and img { border: 0 }
            "css-padding": 6, "css-margin": 4, "css-display": 2, "css-width": 2,
            "css-line-height": 1, "css-text-align": 1, "css-text-decoration": 1,
            "image-gif": 1,  # a JPEG is supported everywhere and not tested
        })

    def test_nodes_and_total(self) -> None:
        total = self.report["Total"]
        self.assertEqual((total["Nodes"], total["Tests"]),
                         (NEWSLETTER_NODES, len(FEATURES) + 1))
        expected = expected_total(found(self.report), NEWSLETTER_NODES)
        self.assertEqual({key: total[key] for key in expected}, expected)

    def test_scores_are_the_data_shares(self) -> None:
        for warning in self.report["Warnings"]:
            score = warning["Score"]
            for key, value in shares(warning["Slug"]).items():
                self.assertEqual(score[key], round(value, 2), (warning["Slug"], key))

    def test_worst_first(self) -> None:
        def weighted(warning: dict[str, Any]) -> float:
            score = warning["Score"]
            return (score["Partial"] + score["Unsupported"]) * \
                min(1.0, score["Found"] / NEWSLETTER_NODES)
        order = [weighted(warning) for warning in self.report["Warnings"]]
        self.assertEqual(order, sorted(order, reverse=True))

    def test_warning_shape(self) -> None:
        media = next(w for w in self.report["Warnings"] if w["Slug"] == "css-at-media")
        self.assertEqual(sorted(media), sorted([
            "Slug", "Title", "Description", "URL", "Category", "Tags", "Keywords",
            "Results", "NotesByNumber", "Score"]))
        self.assertEqual((media["Title"], media["Category"], media["URL"]),
                         ("@media", "css", "https://www.caniemail.com/features/css-at-media/"))
        stats = ENTRIES["css-at-media"]["stats"]
        known = [(family, platform, version, value)
                 for family, platforms in stats.items()
                 for platform, versions in platforms.items()
                 for version, value in versions.items() if not value.startswith("u")]
        self.assertEqual([(r["Family"], r["Platform"], r["Version"])
                          for r in media["Results"]], [k[:3] for k in known])
        names = DATA["nicenames"]
        for result, (family, platform, version, value) in zip(media["Results"], known,
                                                              strict=True):
            self.assertEqual(result["Name"], f"{names['family'][family]} "
                                             f"{names['platform'][platform]} ({version})")
            support = {"y": "yes", "n": "no"}.get(value, "partial")
            self.assertEqual(result["Support"], support)
            notes = value.split("#")[1:]
            self.assertEqual(result["NoteNumber"], notes[-1].strip() if notes else "")
            if notes:
                self.assertIn(result["NoteNumber"], media["NotesByNumber"])

    def test_platforms(self) -> None:
        self.assertEqual(self.report["Platforms"], DATA["platforms"])
        self.assertIn("Outlook", self.report["Platforms"]["windows"])
        for families in self.report["Platforms"].values():
            self.assertEqual(families, sorted(families))


class ModernLayoutTests(TestCase):
    def test_flexbox_grid_position(self) -> None:
        report = check_html(MODERN)
        self.assertEqual(found(report), {
            "css-display": 2, "css-display-flex": 1, "css-display-grid": 1, "css-gap": 1,
            "css-justify-content": 1, "css-position": 2, "css-z-index": 1,
            "css-background-image": 1, "css-linear-gradient": 1, "css-rgba": 1,
            "css-grid-template": 1, "css-width": 1, "css-unit-calc": 1, "css-unit-rem": 1,
            "css-variables": 2,  # --accent defined, var() used
            "css-background": 1,  # the second decoy's real property; nothing of its URL
        })
        self.assertEqual(report["Total"]["Nodes"], 6)
        expected = expected_total(found(report), 6)
        self.assertEqual({key: report["Total"][key] for key in expected}, expected)
        flex = next(w for w in report["Warnings"] if w["Slug"] == "css-display-flex")
        self.assertGreater(flex["Score"]["Unsupported"], 0)
        self.assertIn("no", {result["Support"] for result in flex["Results"]})


class StyleSheetTests(TestCase):
    def test_media_queries_pseudo_classes_at_rules(self) -> None:
        report = check_html(SHEET)
        self.assertEqual(found(report), {
            "html-body": 1, "html-style": 1,
            "css-at-import": 1, "css-at-font-face": 1, "css-at-media": 2,
            "css-at-media-prefers-color-scheme": 1, "css-at-supports": 1,
            "css-at-keyframes": 1,  # its frames' opacity is not a rule's
            "css-display": 1, "css-display-grid": 1,  # inside @supports
            "css-background": 2, "css-important": 2, "css-padding": 1,
            "css-font-weight": 1,
            "css-pseudo-class-hover": 1, "css-pseudo-class-focus": 1,
            "css-pseudo-class-nth-child": 1, "css-pseudo-class-first-child": 1,
            "css-pseudo-element-first-line": 1,
            "css-pseudo-element-before": 1,  # CSS 2's one-colon :before
            "css-pseudo-element-after": 1,  # not the ":hover ::before" in its string
            "css-pseudo-element-placeholder": 1,
        })
        self.assertEqual(report["Total"]["Nodes"], 4)  # style, body, div, p

    def test_at_rules_and_pseudo_weigh_by_count(self) -> None:
        """Thirty flex rules in a sheet for one element: the weight stops at 1."""
        html = "<style>" + "".join(f".c{n} {{ display: flex }}" for n in range(30)) + \
            "</style><div>x</div>"
        report = check_html(html)
        self.assertEqual(found(report)["css-display-flex"], 30)
        self.assertEqual(report["Total"]["Nodes"], 1)
        self.assertEqual(report["Total"]["Unsupported"],
                         round(shares("css-display-flex")["Unsupported"], 2))
        self.assertGreaterEqual(report["Total"]["Supported"], 0)


class ImageAndElementTests(TestCase):
    def test_svg_and_image_formats(self) -> None:
        report = check_html(IMAGES)
        self.assertEqual(found(report), {
            "html-svg": 1, "html-width": 1, "html-height": 1,
            "image-webp": 1, "image-svg": 1,  # upper case, query and fragment ignored
            "image-base64": 1, "image-gif": 1, "image-avif": 1,
            "html-image-maps": 2,  # <map> and <img usemap>
            "html-picture": 1, "html-srcset": 2, "html-anchor-links": 1,
        })

    def test_form(self) -> None:
        self.assertEqual(found(check_html(FORM)), {
            "html-form": 1, "html-input-radio": 2, "html-required": 1,
            "html-input-checkbox": 1, "html-input-text": 2, "html-input-hidden": 1,
            "html-select": 1, "html-textarea": 1, "html-input-submit": 1,
            "html-button-reset": 1, "html-button-submit": 1,
        })

    def test_scripts(self) -> None:
        html = ('<script type="application/ld+json">{"@type": "Order"}</script>'
                "<p>Thanks</p><script>track()</script><script src=a.js></script>")
        report = check_html(html)
        script = report["Warnings"][0]
        self.assertEqual((script["Slug"], script["Category"], script["Results"]),
                         ("html-script", "html", []))
        self.assertEqual(script["Score"], {"Found": 2, "Supported": 0.0, "Partial": 0.0,
                                           "Unsupported": 100.0})
        nodes = report["Total"]["Nodes"]
        self.assertEqual(nodes, 4)  # the JSON-LD script in the head, then p and 2 scripts
        self.assertEqual(report["Total"]["Unsupported"], 50.0)


class NodeCountTests(TestCase):
    def test_fragment_leaves_out_the_head(self) -> None:
        html = ("<title>x</title><style>p{}</style><meta charset=utf-8><script>x</script>"
                "<p>a<br>b</p><style>q{}</style>")
        self.assertEqual(read_document(html).nodes, 4)  # script, p, br, the second style

    def test_text_starts_the_body(self) -> None:
        self.assertEqual(read_document("Hello <style>p{}</style><b>x</b>").nodes, 2)

    def test_document(self) -> None:
        html = ("<html><head><title>t</title><meta name=x><style></style></head>"
                "<body><p>x</p></body></html>")
        document = read_document(html)
        self.assertEqual((document.nodes, document.body), (4, True))

    def test_no_elements(self) -> None:
        report = check_html("Just text &amp; no tags")
        self.assertEqual(report["Total"], {"Nodes": 0, "Tests": len(FEATURES) + 1,
                                           "Supported": 100.0, "Partial": 0.0,
                                           "Unsupported": 0.0})
        self.assertEqual(report["Warnings"], [])


class MessageTests(TestCase):
    """html_check takes the stored bytes and reads the body as the message view does."""

    def test_alternative_quoted_printable(self) -> None:
        raw = (b"From: a@example.com\nSubject: x\nMIME-Version: 1.0\n"
               b"Content-Type: multipart/alternative; boundary=B\n\n"
               b"--B\nContent-Type: text/plain; charset=utf-8\n\nHello\n"
               b"--B\nContent-Type: text/html; charset=iso-8859-1\n"
               b"Content-Transfer-Encoding: quoted-printable\n\n"
               b"<div style=3D\"display:flex\">Gr=FC=DFe</div>\n--B--\n")
        report = html_check(raw)
        assert report is not None
        self.assertEqual(found(report), {"css-display": 1, "css-display-flex": 1})

    def test_text_only_and_html_attachment_have_no_html(self) -> None:
        text = b"From: a@example.com\nSubject: x\n\n<div style='display:flex'>no</div>\n"
        self.assertIsNone(html_check(text))
        attached = (b"From: a@example.com\nSubject: x\nMIME-Version: 1.0\n"
                    b"Content-Type: multipart/mixed; boundary=B\n\n"
                    b"--B\nContent-Type: text/plain\n\nSee the file.\n"
                    b"--B\nContent-Type: text/html\nContent-Disposition: attachment; "
                    b"filename=report.html\n\n<p>report</p>\n--B--\n")
        self.assertIsNone(html_check(attached))
        empty = b"From: a@example.com\nContent-Type: text/html\n\n"
        self.assertIsNone(html_check(empty))


class RobustnessTests(TestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from([
        "<", ">", "/", "!", "-", "[", "]", "=", "'", '"', " ", "a", "style", ":", ";", "{",
        "}", "(", ")", "@media", "\\", "/*", "*/", "<style>", "</style>", "<![if mso]>",
        "<!--", "-->", "<svg>", "<body>", "<script>", 'style="', "url(", "display:flex",
    ]), max_size=60).map("".join))
    def test_any_text_is_checked(self, html: str) -> None:
        total = check_html(html)["Total"]
        for key in ("Supported", "Partial", "Unsupported"):
            self.assertTrue(0 <= total[key] <= 100, total)

    def test_outlook_conditionals(self) -> None:
        html = ("<![if !mso]><div style='display:flex'>x</div><![endif]>"
                "<!--[if mso]><table style='display:grid'><![endif]-->")
        self.assertEqual(found(check_html(html)), {"css-display": 1, "css-display-flex": 1})

    def test_unclosed_constructs_are_linear(self) -> None:
        """html.parser's close re-reads an unclosed tag once per '<' after it."""
        for html in ("<a " * 200_000, "<p style='x" * 100_000, "<!--" + "<b>" * 100_000,
                     "<style>" + "{" * 200_000, '<p style="' + "(" * 200_000 + '">'):
            started = time.monotonic()
            check_html(html)
            self.assertLess(time.monotonic() - started, 10.0, html[:20])

    def test_unclosed_style_is_read(self) -> None:
        self.assertEqual(found(check_html("<p>x</p><style>a:hover { color: red")),
                         {"html-style": 1, "css-pseudo-class-hover": 1})

    def test_large_newsletter(self) -> None:
        """4 MB (the most of a body the view reads), every style attribute different."""
        row = ('<tr><td style="padding:{n}px;font-size:14px;color:#333" width="{n}">'
               '<a href="https://example.com/{n}" style="color:#06c">Item {n}</a></td></tr>\n')
        html = "<table>" + "".join(row.format(n=n) for n in range(28_000)) + "</table>"
        self.assertGreater(len(html), 3_000_000)
        started = time.monotonic()
        report = check_html(html)
        self.assertLess(time.monotonic() - started, 30.0)
        self.assertEqual(found(report)["css-padding"], 28_000)


class CssTests(TestCase):
    def test_declarations(self) -> None:
        declarations = css.declarations(
            "color: red; content: 'a;b'; background: url(a;b.png) ; margin:0 !IMPORTANT;"
            " /* width: 1px; */ \\64 isplay: FLEX; --Gap: 4px; broken; : x; width: 2ch")
        self.assertEqual([(d.name, d.important) for d in declarations], [
            ("color", False), ("content", False), ("background", False), ("margin", True),
            ("display", False), ("--Gap".lower(), False), ("width", False)])
        self.assertEqual(declarations[4].keywords(), {"flex"})
        self.assertEqual(declarations[6].units(), {"ch"})

    def test_style_sheet(self) -> None:
        sheet = css.style_sheet(
            "@charset 'utf-8'; @supports (display:grid) { @media print { .a { gap: 1px } } }"
            " .b { color: red; &:hover { color: blue } } .c { width: calc(1px + 2em); }"
            " .d { unclosed: 1")
        self.assertEqual([rule.name for rule in sheet.at_rules],
                         ["charset", "supports", "media"])
        self.assertEqual([[d.name for d in rule.declarations] for rule in sheet.rules],
                         [["gap"], ["color"], ["width"], ["unclosed"]])
        self.assertEqual(sheet.rules[2].declarations[0].functions(), {"calc"})

    def test_pseudo_names(self) -> None:
        sheet = css.style_sheet("a:not(.x):HOVER, p::first-line, [title='a:focus'] { x: y }")
        self.assertEqual(list(css.pseudo_names(sheet.rules[0].selector)),
                         [("not", False), ("hover", False), ("first-line", True)])


class DataTests(TestCase):
    def test_every_feature_is_in_the_data(self) -> None:
        self.assertEqual(set(FEATURES) - set(ENTRIES), set())

    def test_text_is_html(self) -> None:
        """The refresh turned Markdown into HTML: no Markdown link or code span is left,
        and a tag outside code is escaped."""
        texts = [entry["description"] for entry in ENTRIES.values()] + [
            note for entry in ENTRIES.values() for note in entry["notes_by_num"].values()]
        self.assertFalse([text for text in texts if "](" in text or "`" in text])
        clip = ENTRIES["css-clip-path"]["notes_by_num"]
        self.assertIn('<a href="https://www.caniemail.com/features/html-svg/" '
                      'target="_blank" rel="noreferrer noopener">Embedded SVG</a>',
                      " ".join(clip.values()))

    def test_shipped_as_package_data(self) -> None:
        setup = configparser.ConfigParser()
        setup.read(os.path.join(ROOT, "setup.cfg"))
        listed = setup.get("options.package_data", "mailsink.checks")
        self.assertEqual({item.strip() for item in listed.split(",")},
                         {"data/caniemail.json", "data/caniemail.LICENSE"})
        with open(os.path.join(os.path.dirname(DATA_FILE), "caniemail.LICENSE")) as stream:
            self.assertIn("MIT License", stream.read())


def _refresh_script() -> Any:
    path = os.path.join(ROOT, "tools", "refresh-caniemail")
    loader = importlib.machinery.SourceFileLoader("refresh_caniemail", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class RefreshScriptTests(TestCase):
    def test_markdown_to_html(self) -> None:
        script = _refresh_script()
        self.assertEqual(
            script.to_html("Use `<table>` & <b>not</b> [this](/features/html-div/) or "
                           "[that](https://example.com/a?b=1&c=2)."),
            "Use <code>&lt;table&gt;</code> &amp; &lt;b&gt;not&lt;/b&gt; "
            '<a href="https://www.caniemail.com/features/html-div/" target="_blank" '
            'rel="noreferrer noopener">this</a> or <a href="https://example.com/a?b=1&amp;c=2"'
            ' target="_blank" rel="noreferrer noopener">that</a>.')

    def test_trim(self) -> None:
        script = _refresh_script()
        source = {"api_version": "1", "last_update_date": "today",
                  "nicenames": {"family": {"gmail": "Gmail"}, "platform": {"ios": "iOS"},
                                "support": {}},
                  "data": [{"slug": slug, "title": slug, "description": "`x`", "url": "",
                            "category": "css", "tags": None, "keywords": None,
                            "stats": {"gmail": {"ios": {"1": "y"}}}, "notes_by_num": None,
                            "test_url": "dropped"} for slug in [*FEATURES, "html-div"]]}
        trimmed = script.trim(source, "9.9.9")
        self.assertEqual([entry["slug"] for entry in trimmed["data"]], list(FEATURES))
        self.assertEqual(trimmed["data"][0]["description"], "<code>x</code>")
        self.assertNotIn("test_url", trimmed["data"][0])
        self.assertEqual(trimmed["platforms"], {"ios": ["Gmail"]})
        self.assertEqual(json.loads(script.dump(trimmed)), trimmed)
        source["data"] = source["data"][1:]
        self.assertRaises(SystemExit, script.trim, source, "9.9.9")
