"""
Which caniemail.com features the HTML check looks for, and how each is found.

The set is Mailpit's (its C{internal/htmlcheck} tests these slugs), so a message scores
alike in both, with each feature found the way caniemail.com's own test describes it rather
than by a pattern over the text: C{margin-top} is the C{margin} feature, C{display:flex}
inside a string is nothing, C{<input type="checkbox">} is the checkbox feature. Where
they differ: the C{width}, C{height} and C{background} attributes are caniemail's attribute
features (C{html-width}, ...), not the CSS properties Mailpit counts them as (C{bgcolor} and
C{border} stay C{css-background-color} and C{css-border}, having no attribute feature, and
Mailpit's C{padding} attribute, which HTML has not, is left out); and three slugs are added
where Mailpit's family is incomplete: C{html-input-reset} beside the other inputs,
C{css-linear-gradient} beside the radial and conic ones, and
C{css-at-media-prefers-color-scheme} beside C{@media} (dark mode).

Each feature counts what uses it: elements, elements with an attribute, images, CSS
declarations (in C{style} attributes and C{<style>} sheets), at-rules, or pseudo-classes in
selectors. A linked style sheet is not fetched: the check is pure.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import attrs

from mailsink.checks import css
from mailsink.checks.html_document import Document


def _counter() -> collections.Counter[str]:
    return collections.Counter()


@attrs.define
class CssUsage:
    """What the message's CSS uses, each count in declarations (or rules, selectors)."""

    properties: collections.Counter[str] = attrs.field(factory=_counter)
    values: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter)
    """(property, keyword) pairs, e.g. (C{display}, C{flex})."""
    functions: collections.Counter[str] = attrs.field(factory=_counter)
    keywords: collections.Counter[str] = attrs.field(factory=_counter)
    units: collections.Counter[str] = attrs.field(factory=_counter)
    important: int = 0
    custom: int = 0
    """Custom property definitions (C{--name: ...})."""
    at_rules: collections.Counter[str] = attrs.field(factory=_counter)
    media_features: collections.Counter[str] = attrs.field(factory=_counter)
    """C{@media} rules by each name in their condition (C{prefers-color-scheme}, ...)."""
    pseudo_classes: collections.Counter[str] = attrs.field(factory=_counter)
    pseudo_elements: collections.Counter[str] = attrs.field(factory=_counter)


_LEGACY_ELEMENTS = frozenset({"after", "before", "first-letter", "first-line"})
"""Pseudo-elements CSS 2 wrote with one colon."""


def css_usage(document: Document) -> CssUsage:
    """Read every C{style} attribute and C{<style>} sheet of the document."""
    usage = CssUsage()
    for style, elements in document.styles.items():
        _add(usage, css.declarations(style), elements)
    for text in document.sheets:
        sheet = css.style_sheet(text)
        for rule in sheet.rules:
            _add(usage, rule.declarations, 1)
            for name, double in css.pseudo_names(rule.selector):
                if double or name in _LEGACY_ELEMENTS:
                    usage.pseudo_elements[name] += 1
                else:
                    usage.pseudo_classes[name] += 1
        for at_rule in sheet.at_rules:
            usage.at_rules[at_rule.name] += 1
            if at_rule.name == "media":
                usage.media_features.update({token.text for token in at_rule.prelude
                                             if token.kind is css.Kind.IDENT})
    return usage


def _add(usage: CssUsage, declarations: Iterable[css.Declaration], times: int) -> None:
    """Count C{declarations}, used C{times} times."""
    for declaration in declarations:
        keywords = declaration.keywords()
        usage.properties[declaration.name] += times
        for keyword in keywords:
            usage.values[declaration.name, keyword] += times
            usage.keywords[keyword] += times
        for function in declaration.functions():
            usage.functions[function] += times
        for unit in declaration.units():
            usage.units[unit] += times
        usage.important += declaration.important * times
        usage.custom += declaration.name.startswith("--") * times


Count = Callable[[Document, CssUsage], int]


def elements(*names: str) -> Count:
    return lambda document, _usage: sum(document.tags[name] for name in names)


def attribute(name: str) -> Count:
    return lambda document, _usage: document.attributes[name]


def typed(tag: str, *types: str) -> Count:
    return lambda document, _usage: sum(document.typed[tag, kind] for kind in types)


def properties(*names: str) -> Count:
    return lambda _document, usage: sum(usage.properties[name] for name in names)


def value(name: str, *keywords: str) -> Count:
    return lambda _document, usage: sum(usage.values[name, keyword] for keyword in keywords)


def functions(*names: str) -> Count:
    return lambda _document, usage: sum(usage.functions[name] for name in names)


def keywords(*names: str) -> Count:
    return lambda _document, usage: sum(usage.keywords[name] for name in names)


def unit(name: str) -> Count:
    return lambda _document, usage: usage.units[name]


def at_rules(*names: str) -> Count:
    return lambda _document, usage: sum(usage.at_rules[name] for name in names)


def media_feature(name: str) -> Count:
    return lambda _document, usage: usage.media_features[name]


def pseudo_class(name: str) -> Count:
    return lambda _document, usage: usage.pseudo_classes[name]


def pseudo_element(name: str) -> Count:
    return lambda _document, usage: usage.pseudo_elements[name]


def images(*extensions: str) -> Count:
    wanted = frozenset(extensions)
    return lambda document, _usage: sum(_extension(src) in wanted for src in document.images)


def data_images(document: Document, _usage: CssUsage) -> int:
    return sum(src[:11].lower() == "data:image/" for src in document.images)


def _extension(src: str) -> str:
    if src[:5].lower() == "data:":
        return ""
    try:
        path = urlsplit(src).path
    except ValueError:
        return ""
    name = path.rpartition("/")[2]
    return name.rpartition(".")[2].lower() if "." in name else ""


def _sides(name: str) -> tuple[str, ...]:
    return tuple(f"{name}-{side}" for side in ("top", "right", "bottom", "left"))


def _own(slug: str) -> Count:
    """The CSS property the slug names (C{css-opacity}: C{opacity})."""
    return properties(slug.removeprefix("css-"))


_OWN_PROPERTY = (
    "css-accent-color", "css-align-items", "css-aspect-ratio", "css-background",
    "css-background-blend-mode", "css-background-clip",
    "css-background-image", "css-background-origin", "css-background-repeat",
    "css-background-size", "css-box-shadow", "css-box-sizing", "css-caption-side",
    "css-clip-path", "css-column-count", "css-direction", "css-display", "css-filter",
    "css-flex-direction", "css-flex-wrap", "css-float", "css-font", "css-font-kerning",
    "css-font-weight", "css-height", "css-hyphens", "css-inline-size",
    "css-justify-content", "css-letter-spacing", "css-line-height", "css-list-style",
    "css-list-style-image", "css-list-style-position", "css-max-block-size",
    "css-max-height", "css-max-width", "css-min-height", "css-min-inline-size",
    "css-min-width", "css-mix-blend-mode", "css-object-fit", "css-object-position",
    "css-opacity", "css-outline-offset", "css-overflow-wrap", "css-position", "css-tab-size",
    "css-table-layout", "css-text-align", "css-text-align-last", "css-text-decoration",
    "css-text-decoration-color", "css-text-decoration-thickness",
    "css-text-emphasis-position", "css-text-indent", "css-text-overflow", "css-text-shadow",
    "css-text-transform", "css-text-underline-offset", "css-transform", "css-visibility",
    "css-white-space", "css-width", "css-word-break", "css-writing-mode", "css-z-index",
)

_BORDER_PARTS = tuple(f"{side}{part}" for side in ("", *(f"-{s}" for s in
                                                          ("top", "right", "bottom", "left")))
                      for part in ("", "-width", "-style", "-color"))

_PSEUDO_CLASSES = (
    "active", "checked", "first-child", "first-of-type", "focus", "has", "hover", "lang",
    "last-child", "last-of-type", "link", "not", "nth-child", "nth-last-child",
    "nth-last-of-type", "nth-of-type", "only-child", "only-of-type", "target", "visited",
)
_PSEUDO_ELEMENTS = ("after", "before", "first-letter", "first-line", "marker", "placeholder")


def _table() -> dict[str, Count]:
    table: dict[str, Count] = {
        # HTML elements and attributes.
        "html-body": lambda document, _usage: int(document.body),
        "html-object": elements("object", "embed"),
        "html-link": elements("link"),
        "html-hr": elements("hr"),
        "html-dialog": elements("dialog"),
        "html-srcset": attribute("srcset"),
        "html-picture": elements("picture"),
        "html-svg": elements("svg"),
        "html-progress": elements("progress"),
        "html-required": attribute("required"),
        "html-meter": elements("meter"),
        "html-audio": elements("audio"),
        "html-video": elements("video"),
        "html-form": elements("form"),
        "html-input-submit": typed("input", "submit"),
        "html-input-reset": typed("input", "reset"),
        "html-button-submit": typed("button", "submit"),
        "html-button-reset": typed("button", "reset"),
        "html-base": elements("base"),
        "html-input-checkbox": typed("input", "checkbox"),
        "html-input-hidden": typed("input", "hidden"),
        "html-input-radio": typed("input", "radio"),
        "html-input-text": typed("input", "text", ""),
        "html-semantics": elements("article", "aside", "details", "figcaption", "figure",
                                   "footer", "header", "main", "mark", "nav", "section",
                                   "summary", "time"),
        "html-select": elements("select"),
        "html-textarea": elements("textarea"),
        "html-anchor-links": lambda document, _usage: document.local_links,
        "html-style": elements("style"),
        "html-image-maps": lambda document, _usage: document.tags["map"] + document.image_maps,
        "html-width": attribute("width"),
        "html-height": attribute("height"),
        "html-background": attribute("background"),
        # Image formats, by the file name's extension in <img src>.
        "image-base64": data_images,
        "image-apng": images("apng"),
        "image-avif": images("avif"),
        "image-bmp": images("bmp"),
        "image-gif": images("gif"),
        "image-hdr": images("hdr"),
        "image-heif": images("heif", "heic"),
        "image-ico": images("ico"),
        "image-mp4": images("mp4"),
        "image-svg": images("svg"),
        "image-tiff": images("tif", "tiff"),
        "image-webp": images("webp"),
    }
    table.update((slug, _own(slug)) for slug in _OWN_PROPERTY)
    table.update({
        # CSS properties whose feature covers several names.
        "css-background-position": properties("background-position", "background-position-x",
                                               "background-position-y"),
        "css-border": _plus_attribute("border", properties(*(f"border{part}"
                                                             for part in _BORDER_PARTS))),
        "css-background-color": _plus_attribute("bgcolor", _own("css-background-color")),
        "css-border-image": properties("border-image", "border-image-source",
                                       "border-image-slice", "border-image-width",
                                       "border-image-outset", "border-image-repeat"),
        "css-border-radius": properties("border-radius", "border-top-left-radius",
                                        "border-top-right-radius",
                                        "border-bottom-right-radius",
                                        "border-bottom-left-radius"),
        "css-border-inline-block-individual": properties(
            *(f"border-{axis}-{part}" for axis in ("inline", "block")
              for part in ("color", "style", "width", "start", "end"))),
        "css-block-inline-size": properties("block-size", "inline-size"),
        "css-column-layout-properties": properties(
            "columns", "column-count", "column-fill", "column-gap", "column-rule",
            "column-rule-color", "column-rule-style", "column-rule-width", "column-span",
            "column-width"),
        "css-gap": properties("gap", "column-gap", "row-gap"),
        "css-grid-template": properties("grid-template", "grid-template-areas",
                                        "grid-template-columns", "grid-template-rows"),
        "css-margin": properties("margin", *_sides("margin")),
        "css-padding": properties("padding", *_sides("padding")),
        "css-margin-block-start-end": properties("margin-block-start", "margin-block-end"),
        "css-margin-inline-block": properties("margin-inline", "margin-block"),
        "css-margin-inline-start-end": properties("margin-inline-start", "margin-inline-end"),
        "css-padding-block-start-end": properties("padding-block-start", "padding-block-end"),
        "css-padding-inline-block": properties("padding-inline", "padding-block"),
        "css-padding-inline-start-end": properties("padding-inline-start",
                                                   "padding-inline-end"),
        "css-outline": properties("outline", "outline-color", "outline-style",
                                  "outline-width"),
        "css-overflow": properties("overflow", "overflow-x", "overflow-y", "overflow-block",
                                   "overflow-inline"),
        "css-scroll-snap": properties("scroll-snap-type", "scroll-snap-align",
                                      "scroll-snap-stop"),
        "css-text-emphasis": properties("text-emphasis", "text-emphasis-color",
                                        "text-emphasis-style"),
        # CSS values.
        "css-display-flex": value("display", "flex", "inline-flex"),
        "css-display-grid": value("display", "grid", "inline-grid"),
        "css-display-none": value("display", "none"),
        "css-important": lambda _document, usage: usage.important,
        "css-variables": lambda _document, usage: usage.custom + usage.functions["var"],
        "css-rgb": functions("rgb"),
        "css-rgba": functions("rgba"),
        "css-modern-color": functions("lch", "oklch", "lab", "oklab"),
        "css-unit-calc": functions("calc"),
        "css-linear-gradient": functions("linear-gradient", "repeating-linear-gradient"),
        "css-radial-gradient": functions("radial-gradient", "repeating-radial-gradient"),
        "css-conic-gradient": functions("conic-gradient", "repeating-conic-gradient"),
        "css-intrinsic-size": keywords("fit-content", "min-content", "max-content"),
        "css-unit-initial": keywords("initial"),
        **{f"css-unit-{name}": unit(name) for name in ("ch", "rem", "vh", "vw", "vmin",
                                                        "vmax")},
        # At-rules and selectors of <style> sheets.
        "css-at-font-face": at_rules("font-face"),
        "css-at-import": at_rules("import"),
        "css-at-keyframes": at_rules("keyframes", "-webkit-keyframes"),
        "css-at-media": at_rules("media"),
        "css-at-media-prefers-color-scheme": media_feature("prefers-color-scheme"),
        "css-at-supports": at_rules("supports"),
        **{f"css-pseudo-class-{name}": pseudo_class(name) for name in _PSEUDO_CLASSES},
        **{f"css-pseudo-element-{name}": pseudo_element(name) for name in _PSEUDO_ELEMENTS},
    })
    return table


def _plus_attribute(name: str, count: Count) -> Count:
    """The CSS feature, also used through the presentational HTML attribute C{name}."""
    return lambda document, usage: count(document, usage) + document.attributes[name]


FEATURES: dict[str, Count] = _table()
"""Slug -> how many times the message uses it; C{tools/refresh-caniemail} keeps these."""
