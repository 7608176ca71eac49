"""Training: fine-tune, export and publish scenario models. Never imports ray."""

__all__: list[str] = []
