"""A click command whose ``--help`` lists its options under headings (click has no option groups)."""

from __future__ import annotations

import click


class SectionedCommand(click.Command):
    """A command whose help lists the options of each section under its heading, in order.

    Options in no section (``--config``, ``-v``, ``-q``, ``--help``, ...) come last, under
    "Other options".

    Args:
        sections: heading -> parameter names of its options, in the order listed.
    """

    def __init__(self, *args, sections: dict[str, list[str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sections = sections

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write one help section per heading of :attr:`sections`, then the other options."""
        records = {param.name: param.get_help_record(ctx) for param in self.get_params(ctx)}
        listed = {name for names in self.sections.values() for name in names}
        groups = [(title, [records[name] for name in names if records.get(name)]) for title, names in self.sections.items()]
        groups.append(("Other options", [record for name, record in records.items() if record and name not in listed]))
        for title, rows in groups:
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
