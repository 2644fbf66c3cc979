"""Write the generated dbt models: deterministic text, and only files whose content changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from journeys.compiler.features import collect_features
from journeys.compiler.models import Model, ModelBuilder
from journeys.contracts import load_contracts
from journeys.rules.load import RuleSet

GENERATED_DIR = Path("dbt_project") / "models" / "generated"


@dataclass(frozen=True)
class CompileResult:
    models: list[str]
    written: list[Path]  # files whose content changed (a no-op compile writes none)
    removed: list[Path]


def _templates() -> Environment:
    return Environment(loader=PackageLoader("journeys.compiler", "templates"), undefined=StrictUndefined,
                       keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=False)  # fmt: skip


def build_models(rules: RuleSet) -> list[Model]:
    contracts = load_contracts(rules.project_dir)
    return ModelBuilder(rules, collect_features(rules), contracts).build()


def render_models(models: list[Model]) -> dict[str, str]:
    """File name → text for every generated model (.sql and .yml)."""
    env = _templates()
    files = {}
    for model in models:
        files[f"{model.name}.sql"] = env.get_template("model.sql.j2").render(model=model)
        files[f"{model.name}.yml"] = env.get_template("model.yml.j2").render(models=[model])
    return files


def write_models(rules: RuleSet, out_dir: Path | None = None) -> CompileResult:
    """Compile the (already validated) rules into dbt_project/models/generated/."""
    models = build_models(rules)
    files = render_models(models)
    out_dir = out_dir or Path(rules.project_dir) / GENERATED_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out_dir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    removed = [p for p in sorted(out_dir.iterdir()) if p.is_file() and p.name not in files]
    for path in removed:
        path.unlink()
    return CompileResult([m.name for m in models], written, removed)
