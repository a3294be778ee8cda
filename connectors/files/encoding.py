"""A file's encoding: a BOM, else UTF-8 when the bytes are, else a guess that must be confident."""

from __future__ import annotations

import codecs
from collections.abc import Iterator

from connectors.files.rows import FileUnreadable

SAMPLE_BYTES = 1 << 20


def _western_plausible(text: str) -> bool:
    """Whether text decoded as Windows-1252 looks like a Western European language.

    In French, German or Spanish words an accented letter is the exception; Cyrillic or Greek bytes
    read as Windows-1252 turn whole words into accented letters. So: among the words holding a
    non-ASCII letter, fewer than half of the letters may be non-ASCII.
    """
    if "\x00" in text:
        return False
    non_ascii_letters = letters = 0
    for word in _words_with_non_ascii(text):
        letters += len(word)
        non_ascii_letters += sum(1 for ch in word if ord(ch) > 127)
    return letters == 0 or non_ascii_letters / letters < 0.5


def _words_with_non_ascii(text: str) -> Iterator[str]:
    word: list[str] = []
    for ch in text + " ":
        if ch.isalpha():
            word.append(ch)
        elif word:
            if any(ord(c) > 127 for c in word):
                yield "".join(word)
            word = []


def guess_legacy_encoding(sample: bytes, label: str) -> str:
    """Name the encoding of bytes that are not UTF-8.

    Windows-1252 first when the text reads as a Western language (Excel's "CSV" on Western Windows,
    and a superset of Latin-1's printable characters): charset-normalizer guesses poorly on the few
    accented letters of a customer list (it calls "Zürich" cp775). Otherwise charset-normalizer.

    Raises:
        FileUnreadable: when neither gives a confident answer.
    """
    try:
        text = sample.decode("cp1252")
    except UnicodeDecodeError:
        text = None
    if text is not None and _western_plausible(text):
        return "cp1252"
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is not None and best.encoding and best.chaos < 0.2:
        return str(best.encoding)
    raise FileUnreadable(
        f"{label} is not UTF-8 and its encoding could not be detected: save it as UTF-8 (Excel: "
        f"Save As › 'CSV UTF-8 (Comma delimited)'; Google Sheets exports UTF-8) or pass --encoding NAME "
        f"(for example --encoding cp1252)"
    )


def detect_encoding(head: bytes, label: str) -> str:
    """The encoding of a file from its first bytes: a BOM, else UTF-8 if the bytes are, else a guess.

    ``prepare()`` still decodes the whole file, so a non-UTF-8 byte after the sample is caught there.
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and len(head) >= SAMPLE_BYTES:
            return "utf-8"  # the sample cut a multi-byte character in two
    return guess_legacy_encoding(head, label)
