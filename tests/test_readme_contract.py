"""The README documents the public contract whole: its "Graph model" section every label,
relationship type and property key a statement may use (so a user in Neo4j Browser finds each one
explained), its endpoint tables every operation of the OpenAPI document, and no other, its
module map every module, so a newcomer finds each one; its Configuration table every environment
variable the code reads, and no other, with the default and the values the code takes; its Command
line table every command and option with its default, every `kgrec ...` it shows parses, and every
`make ...` it shows names a Makefile target."""

from __future__ import annotations

import ast
import inspect
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click

from app import create_app
from app.openapi import openapi_document
from graph_schema.allow_list import PROPERTY_KEYS, Label, Rel
from kgrec import config
from kgrec.config import Settings
from kgrec.datasets import BUILTIN
from kgrec_cli.main import main as kgrec_main

README = Path(__file__).resolve().parents[1] / "README.md"
# Pages for people, outside the JSON API's document.
NOT_IN_OPENAPI = {("GET", "/docs"), ("GET", "/console/api/v1/...")}


def graph_model_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Graph model\n")
    return text[start : text.index("\n## ", start + 1)]


def test_every_label_relationship_type_and_property_key_is_documented() -> None:
    section = graph_model_section()
    assert [label.value for label in Label if f"(:{label.value})" not in section] == []
    assert [rel.value for rel in Rel if f"[:{rel.value}]" not in section] == []
    # a property is named in code font, alone (`price`) or with its value (`id: 'catalogue'`)
    assert [key for key in PROPERTY_KEYS if f"`{key}`" not in section and f"`{key}:" not in section] == []


def _operation(method: str, path: str) -> tuple[str, str]:
    return method.upper(), re.sub(r"\{[^}]+\}", "{}", path)  # parameter names may differ


def test_the_endpoint_tables_name_every_operation_of_the_openapi_document(tmp_path: Path) -> None:
    document = openapi_document(create_app(Settings(data_dir=tmp_path)))
    served = {
        _operation(method, path) for path, operations in document["paths"].items() for method in operations
    }
    text = README.read_text(encoding="utf-8")
    named = {_operation(m, p) for m, p in re.findall(r"`(GET|POST|PUT|DELETE|PATCH) (/[^ `?]*)", text)}
    assert sorted(served - named) == []
    assert sorted(named - served - NOT_IN_OPENAPI) == []


MAPPED_PACKAGES = ("kgrec_cli", "app", "workers", "kgrec", "graph_schema", "bench")


def _modules_with_a_docstring() -> set[str]:
    root = README.parent
    tracked = subprocess.run(
        ["git", "ls-files", *MAPPED_PACKAGES], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    return {
        path
        for path in tracked
        if path.endswith(".py") and ast.get_docstring(ast.parse((root / path).read_text(encoding="utf-8")))
    }


def _mapped_modules() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n### Module map\n")
    section = text[start : text.index("\n## ", start)]
    mapped, package = [], None
    for line in section.splitlines():
        if heading := re.fullmatch(r"\*\*`([\w/]+)/`\*\*", line):
            package = heading.group(1)
        elif row := re.match(r"\| `([\w.]+\.py)` \|", line):
            mapped.append(f"{package}/{row.group(1)}")
    return mapped


def test_the_module_map_names_every_module_once() -> None:
    mapped = _mapped_modules()
    assert sorted(m for m in set(mapped) if mapped.count(m) > 1) == []
    modules = _modules_with_a_docstring()
    assert sorted(modules - set(mapped)) == []
    assert sorted(set(mapped) - modules) == []


# --- configuration: README "Configuration" against Settings.from_env and every other read ---------

ROOT = README.parent
CODE_PACKAGES = ("kgrec", "app", "workers", "kgrec_cli", "graph_schema")
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# Variables kgrec's own processes pass to each other: read by the code, set by kgrec, never by a user.
INTERNAL = {
    "KGREC_WORKER_PARENT_PID": "kgrec up's pid, which it sets for the Celery worker it starts (go with it)",
}


def _section(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    ends = [i for i in (text.find("\n## ", start + 1), text.find("\n### ", start + 1)) if i != -1]
    return text[start : min(ends)]


def _cells(row: str) -> list[str]:
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def configuration_table() -> dict[str, tuple[str, str]]:
    """README's Configuration table: each variable's stated default and accepted values."""
    table: dict[str, tuple[str, str]] = {}
    for line in _section("## Configuration").splitlines():
        if not line.startswith("| `"):
            continue
        names_cell, default_cell, accepts_cell, _meaning = _cells(line)
        names = re.findall(r"`([^`]+)`", names_cell)
        defaults, accepts = default_cell.split(" / "), accepts_cell.split(" / ")
        if len(names) > 1:
            assert len(defaults) == len(accepts) == len(names), line
        for i, name in enumerate(names):
            assert name not in table, f"{name} has two rows"
            table[name] = (defaults[i if len(names) > 1 else 0], accepts[i if len(names) > 1 else 0])
    return table


def _from_env() -> ast.FunctionDef:
    tree = ast.parse((ROOT / "kgrec/config.py").read_text(encoding="utf-8"))
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    return next(n for n in settings.body if isinstance(n, ast.FunctionDef) and n.name == "from_env")


def settings_variables() -> dict[str, tuple[str | None, dict[str, Any]]]:
    """Every variable ``Settings.from_env`` reads, with the check it is read through (``_number``,
    ``_flag``, ...; None: taken as it is) and that check's keyword arguments."""
    function = _from_env()
    found: dict[str, tuple[str | None, dict[str, Any]]] = {}
    module = ast.parse((ROOT / "kgrec/config.py").read_text(encoding="utf-8"))
    helpers = {node.name for node in module.body if isinstance(node, ast.FunctionDef)}
    checks = [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers
    ]
    for call in checks:
        keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
        for node in ast.walk(call):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and ENV_NAME.fullmatch(node.value)
            ):
                found[node.value] = (call.func.id, keywords)  # type: ignore[union-attr]
    for node in ast.walk(function):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.fullmatch(node.value):
            found.setdefault(node.value, (None, {}))
    return found


def _module_constants(paths: list[Path]) -> dict[str, str]:
    constants: dict[str, str] = {}
    for path in paths:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                        constants[target.id] = node.value.value
    return constants


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def environment_reads(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Each variable read by name (``os.environ.get(X)``, ``os.environ[X]``, ``X in os.environ``,
    ``os.getenv(X)``) in the packages' sources, with the files that read it; a name kept in a
    module-level constant is resolved. (``os.environ.setdefault`` gives a library's variable a
    default: a write, not a setting.)"""
    paths = sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))
    constants = _module_constants(paths)
    reads: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            key: ast.AST | None = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                if node.func.attr == "get" and _is_os_environ(node.func.value):
                    key = node.args[0]
                elif node.func.attr == "getenv" and isinstance(node.func.value, ast.Name):
                    key = node.args[0] if node.func.value.id == "os" else None
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Load)
                and _is_os_environ(node.value)
            ):
                key = node.slice
            elif isinstance(node, ast.Compare) and any(_is_os_environ(c) for c in node.comparators):
                key = node.left
            if key is None:
                continue
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                name = key.value
            elif isinstance(key, ast.Name) and key.id in constants:
                name = constants[key.id]
            else:
                name = f"<unresolved {ast.unparse(key)}>"
            reads.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return reads


def test_the_configuration_table_documents_every_variable_kgrec_reads_and_no_other() -> None:
    table = configuration_table()
    read = set(settings_variables()) | set(environment_reads(CODE_PACKAGES))
    assert sorted(read - set(table) - set(INTERNAL)) == []
    assert sorted(set(table) - read) == []
    assert sorted(set(INTERNAL) - read) == []  # the exceptions do not outlive the code


def test_every_variable_the_readme_names_is_read_by_kgrec_its_tests_or_the_compose_file() -> None:
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    known = (
        set(settings_variables())
        | set(environment_reads((*CODE_PACKAGES, "tests")))
        | set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", compose))
    )
    named = set(re.findall(r"\b(?:KGREC|NEO4J)_[A-Z0-9_]+\b", README.read_text(encoding="utf-8")))
    assert sorted(named - known) == []


def _stated(cell: str, variables: set[str]) -> str | None:
    """The value a default cell states (a leading code span), or None: it says in words that the
    variable is unset or empty (another variable's name in code font is words too)."""
    if cell == "empty":
        return ""
    span = re.match(r"`([^`]*)`", cell)
    return span.group(1) if span and span.group(1) not in variables else None


def test_each_variables_stated_default_is_the_one_the_code_uses() -> None:
    # Setting a variable to the value the README states as its default changes nothing; a default
    # stated in words ("unset", "the embedded server") is what the variable gives when empty.
    table = configuration_table()
    unset = Settings.from_env({})
    wrong = []
    for name, (cell, _accepts) in sorted(table.items()):
        value = _stated(cell, set(table))
        try:
            same = Settings.from_env({name: "" if value is None else value}) == unset
        except ValueError:
            same = False
        if not same:
            wrong.append((name, cell))
    assert wrong == []


def _accepts(check: str | None, keywords: dict[str, Any]) -> str | None:
    """What a variable read through ``check`` accepts, as the README's table says it (None: any text)."""
    if check == "_number":
        signature = inspect.signature(config._number)
        bounds = {name: p.default for name, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY}
        bounds.update(keywords)
        kind = "whole number" if bounds["whole"] else "number"
        text = f"{kind} {'>' if bounds['above'] else '≥'} {bounds['low']:g}"
        # a whole ceiling in full: 604800, not 6.048e+05
        high = f"{bounds['high']:.0f}" if float(bounds["high"]).is_integer() else f"{bounds['high']:g}"
        return text if math.isinf(bounds["high"]) else f"{text}, ≤ {high}"
    if check == "_flag":
        return "`true` or `false`"
    if check == "_fsync_policy":
        return ", ".join(f"`{policy}`" for policy in config.FSYNC_POLICIES)
    if check == "queue_name":
        assert config.QUEUE_NAME.pattern == "[A-Za-z0-9_.-]{1,64}", "say in _accepts what it accepts now"
        return "1 to 64 letters, digits, `_`, `.`, `-`"
    if check == "_api_keys":
        return "printable ASCII, comma-separated"
    if check == "_erase_keys":
        return "printable ASCII, comma-separated, only with `KGREC_ADMIN_KEYS`"
    if check == "_parse_weights":
        return "`behaviour=weight`, comma-separated, each weight a number ≥ 0"
    if check == "_url":
        return ", ".join(f"`{scheme}://`" for scheme in keywords["schemes"]) + " URL"
    if check == "_name":
        return "a name, not empty"
    if check == "checked_eval_database":
        return "a database name, not empty, never `NEO4J_DATABASE`'s (Neo4j ignores case)"
    if check == "_origin":
        return "an origin: `http://` or `https://`, a host, an optional port"
    assert check is None, f"a new check, {check}: say in _accepts what it accepts"
    return None


def test_each_variables_accepted_values_are_the_ones_the_code_checks() -> None:
    table = configuration_table()
    wrong = []
    for name, (check, keywords) in sorted(settings_variables().items()):
        expected = _accepts(check, keywords)
        if expected is not None and table.get(name, ("", ""))[1] != expected:
            wrong.append((name, table.get(name, ("", ""))[1], expected))
    assert wrong == []


# --- the command line: README's `kgrec ...` lines against the click commands ---------------------------

# Positional arguments that take names beyond a click.Choice: `kgrec import` takes a built-in data set
# (the names of `kgrec data fetch`) or a folder.
ARGUMENT_NAMES = {("import", "dataset"): set(BUILTIN)}
ELLIPSIS = ("...", "…")


def commands() -> dict[str, click.Command]:
    """Every command and group of ``kgrec``, by its words (``"db start"``; the root is ``""``)."""
    found: dict[str, click.Command] = {}

    def walk(command: click.Command, words: str) -> None:
        found[words] = command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{words} {name}".strip())

    walk(kgrec_main, "")
    return found


def _placeholder(token: str) -> bool:
    """A value the reader fills in: ``FILE``, ``KEY,KEY...``, ``FILE.npz``, ``<subset>``, ``k=v``, ``...``."""
    return (
        token in ELLIPSIS
        or bool(re.fullmatch(r"<[^>]+>|'?[A-Z][A-Z0-9_]*'?(\.[a-z0-9]+)?(,[A-Z]+)*,?(\.\.\.|…)?", token))
        or "=" in token
    )


class Line:
    """One ``kgrec ...`` line of the README: the command it names, its options (with the value
    shown and whether in brackets) and its positional words (with whether in brackets)."""

    def __init__(self, text: str, known: dict[str, click.Command]) -> None:
        self.text = text
        words = text.replace("\\|", "|").split()[1:]
        self.words = ""
        while words and f"{self.words} {words[0]}".strip() in known:
            self.words = f"{self.words} {words[0]}".strip()
            words.pop(0)
        self.command = known[self.words]
        self.options: list[tuple[str, str | None, bool]] = []
        self.positionals: list[tuple[str, bool]] = []
        self.errors: list[str] = []
        options = {
            name: param
            for param in self.command.params
            if isinstance(param, click.Option)
            for name in param.opts + param.secondary_opts
        }
        depth = 0
        while words:
            token = words.pop(0)
            depth += len(token) - len(token.lstrip("["))
            optional = depth > 0
            core = token.strip("[]")
            depth -= len(token) - len(token.rstrip("]"))
            if not core.startswith("--"):
                if core not in ELLIPSIS:
                    self.positionals.append((core, optional))
                continue
            param = options.get(core)
            if param is None:
                self.errors.append(f"no option {core}")
                continue
            value = None
            # a value follows unless the option is a flag or its brackets close on it (`[--port]`)
            if (
                not param.is_flag
                and not token.endswith("]")
                and words
                and not words[0].startswith(("-", "["))
            ):
                value_token = words.pop(0)
                value = value_token.strip("[]")
                depth -= len(value_token) - len(value_token.rstrip("]"))
            self.options.append((core, value, optional))


def shown_commands(program: str) -> list[str]:
    """Every ``<program> ...`` the README shows: the commands of code blocks, fenced or indented
    (continued lines joined, variables set in front and comments cut), and code spans (also across a
    line break, and in a code block's comments)."""
    prose, block, shown, fenced = [], [], [], False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            prose.append("")
            continue
        if fenced:
            block.append(line)
            shown += re.findall(r"`([^`]+)`", line)
            prose.append("")
        else:  # a line indented four spaces may be code or a nested list's text: read as both
            block.append(line if line.startswith("    ") else "")
            prose.append(line)
    shown += [" ".join(span.split()) for span in re.findall(r"`([^`\n]+(?:\n[^`\n]+)*)`", "\n".join(prose))]
    shown += [line.split(" #")[0] for line in re.sub(r"\\\n\s*", " ", "\n".join(block)).splitlines()]
    start = re.compile(rf"^\s*(?:\$ )?(?:[A-Z_][A-Z0-9_]*=\S* )*(?={re.escape(program)} )")
    return [start.sub("", text).strip() for text in shown if start.match(text)]


def _printed(text: str) -> bool:
    """A line kgrec prints (``kgrec up: graph killed ...``, ``kgrec is up on …``), quoted as it is
    printed: its beginning (up to its first colon, or the whole text) is in kgrec_cli's sources."""
    sources = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "kgrec_cli").glob("*.py"))
    start = text.split(":")[0] + ":" if ":" in text else text.rstrip(" ." + "…")
    return start in sources


def _choices(line: Line, param: click.Parameter, *, synopsis: bool = False) -> set[str] | None:
    """The names a parameter takes; a synopsis also lists those of ARGUMENT_NAMES (an example may
    give a folder there)."""
    if isinstance(param.type, click.Choice):
        return {str(choice) for choice in param.type.choices}
    return ARGUMENT_NAMES.get((line.words, param.name or "")) if synopsis else None


def _value_errors(line: Line, param: click.Parameter, value: str, *, synopsis: bool = False) -> list[str]:
    """A value shown for a parameter: each of its ``a|b`` alternatives a placeholder or a choice."""
    choices = _choices(line, param, synopsis=synopsis)
    alternatives = value.split("|")
    if choices is None:
        return []
    named = {a for a in alternatives if not _placeholder(a)}
    if named - choices:
        return [f"{param.name}: {sorted(named - choices)} not among {sorted(choices)}"]
    return []


def test_every_kgrec_line_in_the_readme_names_a_real_command_with_real_options_and_values() -> None:
    known = commands()
    wrong = []
    for text in shown_commands("kgrec"):
        first = text.split()[1]
        if first not in known:
            if not _printed(text):
                wrong.append((text, "no such command, and kgrec prints no such line"))
            continue
        line = Line(text, known)
        errors = list(line.errors)
        params = {p.opts[0] if isinstance(p, click.Option) else p.name: p for p in line.command.params}
        for name, value, _optional in line.options:
            if value is not None:
                errors += _value_errors(line, params[name], value)
        arguments = [p for p in line.command.params if isinstance(p, click.Argument)]
        if isinstance(line.command, click.Group):
            if line.positionals or line.options:
                errors.append(f"{line.words or 'kgrec'} is a group: no command {line.positionals[:1]}")
        elif len(line.positionals) > len(arguments):
            errors.append(f"more words than arguments: {line.positionals}")
        for (word, _optional), argument in zip(line.positionals, arguments, strict=False):
            errors += _value_errors(line, argument, word)
        if errors:
            wrong.append((text, errors))
    assert wrong == []


def command_line_table() -> list[Line]:
    """The commands column of README "Command line": one line per ``kgrec ...`` span."""
    known, lines = commands(), []
    for row in _section("## Command line").splitlines():
        if row.startswith("| `kgrec "):
            lines += [Line(span, known) for span in re.findall(r"`(kgrec [^`]+)`", _cells(row)[0])]
    return lines


def _default(param: click.Parameter) -> object | None:
    default = param.default
    return default if isinstance(default, (str, int, float, Path)) and not isinstance(default, bool) else None


def _same(shown: str, default: object) -> bool:
    if isinstance(default, (int, float)):
        try:
            return float(shown) == default
        except ValueError:
            return False
    return shown == str(default)


def _synopsis_errors(line: Line) -> list[str]:
    errors = list(line.errors)
    params = {p.opts[0] if isinstance(p, click.Option) else p.name: p for p in line.command.params}
    for name, value, optional in line.options:
        param = params[name]
        assert isinstance(param, click.Option)
        if param.hidden:
            errors.append(f"{name} is hidden (deprecated): not in the table")
        if optional == param.required:
            errors.append(f"{name}: {'required' if param.required else 'optional'}, brackets say otherwise")
        if param.is_flag:
            if value is not None:
                errors.append(f"{name} is a flag, shown with {value!r}")
            continue
        if value is None:
            errors.append(f"{name} takes a value, shown without one")
            continue
        errors += _value_errors(line, param, value, synopsis=True)
        first = value.split("|")[0]
        default = _default(param)
        if default is not None and not _same(first, default):
            errors.append(f"{name}: default {default!r}, shown as {first!r}")
        if default is None and _choices(line, param, synopsis=True) is None and not _placeholder(value):
            errors.append(f"{name}: no default, shown as {value!r} (a placeholder such as D or FILE)")
    arguments = [p for p in line.command.params if isinstance(p, click.Argument)]
    if len(line.positionals) != len(arguments):
        errors.append(f"{len(arguments)} arguments, {len(line.positionals)} shown")
    for (word, optional), argument in zip(line.positionals, arguments, strict=False):
        if optional == argument.required:
            errors.append(f"{argument.name}: brackets say {'optional' if optional else 'required'}")
        choices = _choices(line, argument, synopsis=True)
        named = {a for a in word.split("|") if not _placeholder(a)}
        if choices is not None and named != choices:
            errors.append(f"{argument.name}: shows {sorted(named)}, takes {sorted(choices)}")
    return errors


def test_the_command_line_table_shows_every_command_with_every_option_and_its_default() -> None:
    known = commands()
    table = command_line_table()
    leaves = {words for words, c in known.items() if not isinstance(c, click.Group) and not c.hidden}
    assert sorted(leaves - {line.words for line in table}) == []
    wrong = [(line.text, errors) for line in table if (errors := _synopsis_errors(line))]
    assert [line.text for line in table if line.words not in leaves] == []
    for words in sorted(leaves):
        shown = {name for line in table if line.words == words for name, _v, _o in line.options}
        visible = {p.opts[0] for p in known[words].params if isinstance(p, click.Option) and not p.hidden}
        if shown != visible:
            wrong.append(
                (f"kgrec {words}", [f"missing {sorted(visible - shown)}", f"extra {sorted(shown - visible)}"])
            )
    assert wrong == []


# --- make -------------------------------------------------------------------------------------------


def test_every_make_command_in_the_readme_names_a_makefile_target() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", makefile, re.MULTILINE))
    variables = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*[:?+]?=", makefile, re.MULTILINE))
    commands_shown = shown_commands("make")
    assert commands_shown
    wrong = []
    for command in commands_shown:
        for word in command.split()[1:]:
            name, is_assignment, _value = word.partition("=")
            if (is_assignment and name not in variables) or (not is_assignment and word not in targets):
                wrong.append((command, word))
    assert wrong == []


def test_make_names_each_missing_prerequisite_before_installing(tmp_path: Path) -> None:
    """The README's prerequisites were found missing late: after a long pip install, or by a test."""
    old_python = tmp_path / "python3"
    old_python.write_text("#!/bin/sh\necho 'Python 3.9.2'\nexit 1\n")
    old_python.chmod(0o755)
    tools = tmp_path / "bin"  # a PATH without npm
    tools.mkdir()
    for tool in ("sh", "grep", "head", "make"):
        (tools / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    for target in ("prereqs", "install", "run", "test"):
        done = subprocess.run(
            ["make", "-s", "--no-print-directory", target, f"PYTHON={old_python}"],
            cwd=ROOT,
            env={"PATH": str(tools)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        missing = [line for line in done.stdout.splitlines() if line.startswith("missing: ")]
        # libgomp is found here through /sbin/ldconfig whatever PATH is
        assert [line.split(" (")[0] for line in missing][:2] == [
            f"missing: Python 3.11 or newer as {old_python}",
            "missing: npm",
        ], done.stdout
