"""The report as plain data: sections of paragraphs, lists, tables and images, rendered to HTML/Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lscape_cli.report.cells import Table


@dataclass
class Image:
    """A PNG shown in the report: made for it (``file`` None) or found beside a record."""

    name: str  # file name under the figures folder (generated) or the file's own name
    title: str
    png: bytes
    caption: str = ""
    file: Path | None = None  # an existing figure (linked from Markdown by its relative path)


@dataclass
class Bullets:
    """A list of lines; ``warn`` renders it as a flagged box."""

    items: list[str]
    warn: bool = False


Block = Table | Image | Bullets | str


@dataclass
class Section:
    """A titled part of the report (present only when it has records to show)."""

    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    """Everything a report shows, before rendering."""

    title: str
    summary: str
    sections: list[Section]
    footer: list[str]
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)

    def __post_init__(self) -> None:
        for section in self.sections:
            self.tables += [b for b in section.blocks if isinstance(b, Table)]
            self.images += [b for b in section.blocks if isinstance(b, Image)]
