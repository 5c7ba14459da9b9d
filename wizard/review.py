"""The review table shown before a config is saved: what differs from the defaults, plus the few
settings everyone wants to see, grouped by section."""

from __future__ import annotations

from enum import Enum
from typing import Any

from rich.markup import escape
from rich.table import Table

from engine.config.schema import SECTIONS, ModelFamily, TrainConfig, section_model
from engine.network.blocks import block_labels
from engine.run.distributed import launched_processes

#: always shown, changed or not
IMPORTANT: frozenset[str] = frozenset(
    {
        "model.base_model",
        "dataset.img_folder",
        "dataset.resolution",
        "network.type",
        "network.dim",
        "network.alpha",
        "optim.optimizer",
        "optim.learning_rate",
        "training.batch_size",
        "training.epochs",
        "saving.output_folder",
    }
)


def review_rows(
    cfg: TrainConfig, also: set[str] = frozenset(), loaded: TrainConfig | None = None
) -> list[tuple[str, str, Any, Any]]:
    """(section, field, value, default) for each field worth showing, in declaration order: those
    that differ from the default or from the `loaded` file's value, the IMPORTANT ones, and `also`."""
    rows = []
    for section in SECTIONS:
        values = getattr(cfg, section)
        in_file = None if loaded is None else getattr(loaded, section)
        for name, info in section_model(section).model_fields.items():
            value = getattr(values, name)
            default = info.get_default(call_default_factory=True)
            changed = in_file is not None and getattr(in_file, name) != value
            if value != default or changed or f"{section}.{name}" in IMPORTANT or f"{section}.{name}" in also:
                rows.append((section, name, value, default))
    return rows


def changed_from_file(cfg: TrainConfig, loaded: TrainConfig) -> list[str]:
    """The fields whose value is not the loaded file's ("section.field"), in declaration order."""
    return [
        f"{section}.{name}"
        for section in SECTIONS
        for name in section_model(section).model_fields
        if getattr(getattr(cfg, section), name) != getattr(getattr(loaded, section), name)
    ]


def review_table(
    cfg: TrainConfig,
    labels: dict[str, str],
    follows: dict[str, str] | None = None,
    loaded: TrainConfig | None = None,
) -> Table:
    """A rich table of `review_rows`; changed values in bold. `follows` marks the values that
    follow an earlier answer (field -> why, e.g. "for Prodigy"), which are shown whatever they are.
    With the `loaded` config, a column shows the file's value of every setting that differs from it
    (a regularisation folder cleared shows as cleared, not as a row that went missing). Long values
    wrap inside their cell: nothing is cut."""
    follows = follows or {}
    table = Table(title=labels["title"], title_justify="left")
    keys = ["section", "field", "value", "default", *(["in_file"] if loaded is not None else [])]
    for key in keys:
        table.add_column(labels[key], style="dim" if key in ("section", "default") else None, overflow="fold")
    rows = review_rows(cfg, set(follows), loaded)
    for i, (section, name, value, default) in enumerate(rows):
        first = i == 0 or rows[i - 1][0] != section
        last = i == len(rows) - 1 or rows[i + 1][0] != section
        shown = escape(show_value(value, labels))
        why = follows.get(f"{section}.{name}")
        if why and value != default:
            shown += f" [dim]({escape(why)})[/]"
        cells = [
            section if first else "",
            name,
            f"[bold]{shown}[/]" if value != default else shown,
            escape(show_value(default, labels)),
        ]
        if loaded is not None:
            before = getattr(getattr(loaded, section), name)
            cells.append(f"[yellow]{escape(show_value(before, labels))}[/]" if before != value else "")
        table.add_row(*cells, end_section=last)
    # how the run will be split: what `accelerate launch` started (1 for a plain command)
    processes = launched_processes()
    batch, accumulation = cfg.training.batch_size, cfg.optim.gradient_accumulation_steps
    padding = [""] * (len(keys) - 3)
    table.add_row(labels["run"], labels["processes"], str(processes), *padding)
    table.add_row("", labels["effective_batch"], f"{batch * accumulation * processes} ({batch} x {accumulation} x {processes})", *padding)
    return table


def show_review(screen, table: Table, cfg: TrainConfig, follows: dict[str, str], loaded: TrainConfig | None) -> None:
    """The review table when it fits the terminal; else the same rows as a list (a setting and its
    value a line, the default and the file's value after it), so no value is squeezed into a column
    a few characters wide."""
    from rich.measure import Measurement

    console, labels = screen.console, screen.texts["review"]
    if Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width:
        console.print(table)
        return
    screen.say(labels["title"], "bold")
    rows = review_rows(cfg, set(follows), loaded)
    name_width = max(len(name) for _, name, _, _ in rows)
    for i, (section, name, value, default) in enumerate(rows):
        if i == 0 or rows[i - 1][0] != section:
            screen.say(section, "dim")
        shown = show_value(value, labels)
        if f"{section}.{name}" in follows and value != default:
            shown += f" ({follows[f'{section}.{name}']})"  # as the table shows it: "0.0001 (for Prodigy)"
        notes = []
        if value != default:
            notes.append(labels["default_was"].format(value=show_value(default, labels)))
        before = None if loaded is None else getattr(getattr(loaded, section), name)
        if loaded is not None and before != value:
            notes.append(labels["in_file_was"].format(value=show_value(before, labels)))
        text = f"{name.ljust(name_width)}  {shown}" + (f"  ({'; '.join(notes)})" if notes else "")
        screen.say(text, "bold" if value != default or (loaded is not None and before != value) else None, "  ", "  " + " " * (name_width + 2))
    processes = launched_processes()
    batch, accumulation = cfg.training.batch_size, cfg.optim.gradient_accumulation_steps
    screen.say(labels["run"], "dim")
    screen.say(f"{labels['processes']}: {processes}", indent="  ")
    screen.say(f"{labels['effective_batch']}: {batch * accumulation * processes} ({batch} x {accumulation} x {processes})", indent="  ")


def show_value(value: Any, labels: dict[str, str]) -> str:
    """A value as the review and the edit list show it (labels give the words for yes/no/unset)."""
    if value is None:
        return labels["unset"]
    if isinstance(value, bool):
        return labels["yes"] if value else labels["no"]
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return str(value)


def answer_text(q, value: Any, labels: dict[str, str], titles: dict[str, str] | None = None) -> str:
    """An answer as the user gave it: yes/no for a yes/no question even where it stands for another
    value (the SD2 question's family, the realistic question's clip_skip), a choice's title."""
    from wizard.draft import Kind

    if q.kind is Kind.CONFIRM:
        return labels["yes"] if q.says_yes(value) else labels["no"]
    if q.kind is Kind.SELECT and titles and str(getattr(value, "value", value)) in titles:
        return titles[str(getattr(value, "value", value))]
    return show_value(value, labels)


def block_table(family: ModelFamily, values: dict[str, list[float]], labels: dict[str, str]) -> Table:
    """One row per U-Net block (25 for SD1/SD2, 23 for SDXL), one column per block setting that is set
    ("lr" weights, block_dims, ...). A block whose LR weight is 0 gets no LoRA modules: it is dimmed."""
    names = block_labels(family)
    lr = values.get("lr")
    title = labels["title"].format(family=family.value, count=len(names))
    table = Table(
        title=title,
        title_justify="left",
        min_width=len(title),  # a narrow table would otherwise wrap its own title
        caption=labels["off"] if lr is not None and 0 in lr else None,
        caption_justify="left",
    )
    table.add_column(labels["block"])
    for key in values:
        table.add_column(labels[key], justify="right")
    for i, name in enumerate(names):
        cells = [f"{column[i]:.4g}" for column in values.values()]
        off = lr is not None and lr[i] == 0
        table.add_row(name, *cells, style="dim" if off else None)
    return table
