"""The model card (``README.md``) of a toolken checkpoint, written at every save.

Rendered from what the folder holds (``toolken_config.json``: base model, tools, the training
recipe and run, calibration; the generation options that differ from the defaults; the file
names), like the cards ``transformers`` and PEFT write. Figures are the run's own dev-split
figures.
"""

from __future__ import annotations

MAX_TOOL_ROWS = 50  # past this, the card lists the first ones; the config lists all


FILES = {"toolken_config.json": "base model, tools (row order) and their manifest, the training recipe and run",
         "toolken_model.safetensors": "the toolken rows (and biases): the only trained weights",
         "generation_config.json": "the options generation uses unless told otherwise",
         "toolken_demos.jsonl": "the training records retrieved demos come from (not dev)",
         "toolken_tools.py": "a copy of the tool pack (code: run only when you name it)",
         "README.md": "this card"}


def model_card(cfg: dict, generation: dict | None = None, files=()) -> str:
    """Markdown with a YAML header, from a checkpoint config (see ``ToolkenModel.checkpoint_config``),
    the generation options that differ from the defaults, and the names of the folder's files."""
    base, tools = cfg.get("base_model", "?"), list(cfg.get("tools") or [])
    training = _dict(cfg.get("training"))
    parts = [_header(base), f"# Toolkens for `{base}`\n",
             f"{len(tools)} tool(s) learned as toolkens (ToolkenGPT: one output row per tool) for "
             f"the frozen base model `{base}`; the base weights are not in this folder.\n",
             _base_section(cfg), _use_section(cfg), _tools_section(cfg, tools),
             _training_section(training), _figures_section(training, _dict(cfg.get("calibration"))),
             _generation_section(_dict(generation)), _files_section(files)]
    return "\n".join(p for p in parts if p)


def _header(base: str) -> str:
    return f"---\nlibrary_name: toolken\nbase_model: {base}\ntags:\n- toolken\n- tool-use\n---\n"


def _base_section(cfg: dict) -> str:
    rows = [f"- base model: `{cfg.get('base_model')}`"
            + (f" at hub commit `{cfg['base_revision']}`" if cfg.get("base_revision") else ""),
            f"- weight fingerprint `{cfg.get('base_fingerprint')}` (of the weights as stored: the "
            f"same in every dtype; another base model is refused)",
            f"- hidden size {cfg.get('hidden_size')}, vocabulary {cfg.get('vocab_size')}"]
    return "## Base model\n\n" + "\n".join(rows) + "\n"


def _use_section(cfg: dict) -> str:
    pack = _dict(cfg.get("tool_pack"))
    if pack.get("file"):
        tools_py = f'"FOLDER/{pack["file"]}"'
        note = (f"`{pack['file']}` is a copy of the tool pack `{pack.get('source')}` (sha256 "
                f"`{pack.get('sha256', '?')[:16]}...`), taken at save. It is Python code: it runs "
                f"only when you name it (`--tools checkpoint`, or its path), never on its own.\n")
    else:
        tools_py, note = '"PACK.py"', "This folder holds no copy of the tool pack: give your own.\n"
    cli = "checkpoint" if pack.get("file") else "PACK.py"
    return ("## Use\n\n```python\nfrom toolken import ToolkenModel\n\n"
            f'model = ToolkenModel.from_pretrained("FOLDER", tools={tools_py})\n'
            'print(model.generate("Q: YOUR QUESTION\\nA:").text)\n```\n\n'
            f'```\ntoolken generate --toolkens FOLDER --tools {cli} "YOUR QUESTION"\n```\n\n' + note)


def _tools_section(cfg: dict, tools: list[str]) -> str:
    described = {e.get("name"): e.get("description", "") for e in cfg.get("manifest") or []
                 if isinstance(e, dict)}
    rows = [f"| {i} | `{t}` | {_cell(described.get(t, ''))} |"
            for i, t in enumerate(tools[:MAX_TOOL_ROWS])]
    more = (f"\n... and {len(tools) - MAX_TOOL_ROWS} more (all in `toolken_config.json`, row "
            f"order)\n" if len(tools) > MAX_TOOL_ROWS else "")
    return ("## Tools (row i of the head is tool i)\n\n| row | tool | description |\n|---|---|---|\n"
            + "\n".join(rows) + "\n" + more)


def _cell(text: str) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= 120 else text[:117] + "..."


def _training_section(training: dict) -> str:
    recipe = _dict(training.get("config"))
    if not recipe:
        return ""
    files = [f"`{recipe.get('train_file')}` ({recipe.get('data_format')})"]
    files += [f"`{f.get('file')}` ({f.get('data_format', 'canonical')})" if isinstance(f, dict)
              else f"`{f}`" for f in _list(recipe.get("extra_train_files"))]
    dev = (f"`{recipe['dev_file']}`" if recipe.get("dev_file") else
           f"{recipe.get('dev_fraction')} of the training records, held out by seed {recipe.get('seed')}")
    rows = [f"- training data: {', '.join(files)}"
            + (f" (contents digest `{training['data_digest']}`)" if training.get("data_digest") else ""),
            f"- dev split: {dev}",
            f"- recipe: {recipe.get('epochs')} epochs, lr {recipe.get('lr')}, batch "
            f"{recipe.get('batch_size')} positions, init {recipe.get('init')}, max_length "
            f"{recipe.get('max_length')}, dtype {recipe.get('dtype')}"
            + (f", prompt layout `{recipe['train_prompt']}`" if recipe.get("train_prompt") else "")
            + " (the whole recipe: `training.config` in `toolken_config.json`)"]
    if training.get("command"):
        rows.append(f"- made by `{training['command']}`"
                    + (f" in `{training['working_directory']}`" if training.get("working_directory") else "")
                    + (f" on {training['date']}" if training.get("date") else ""))
    return "## Training\n\n" + "\n".join(rows) + "\n"


def _generation_section(changed: dict) -> str:
    if not changed:
        return "## Generation\n\n`generation_config.json` holds the default options.\n"
    rows = ", ".join(f"`{k}` " + (_num(v, "+.4g") if k == "toolken_bias" else repr(v))
                     for k, v in sorted(changed.items()))
    return f"## Generation\n\n`generation_config.json` differs from the defaults in: {rows}.\n"


def _files_section(files) -> str:
    rows = [f"- `{f}`: {FILES.get(f, '')}" for f in sorted(files)]
    return "## Files\n\n" + "\n".join(rows) + "\n" if rows else ""


def _figures_section(training: dict, calibration: dict) -> str:
    best = _dict(training.get("best"))
    rows = []
    if "dev_f1" in best:
        rows.append(f"- best epoch {best.get('epoch')}: dev loss {_num(best.get('dev_loss'), '.4f')}; "
                    f"toolken precision {_num(best.get('dev_precision'))}, recall "
                    f"{_num(best.get('dev_recall'))}, F1 {_num(best['dev_f1'])} at bias 0 "
                    f"({best.get('dev_toolken_labels')} toolken labels)")
    elif best:
        rows.append(f"- last epoch {best.get('epoch')}: train loss "
                    f"{_num(best.get('train_loss'), '.4f')} (no dev split)")
    if calibration:
        before, after = _dict(calibration.get("dev_before")), _dict(calibration.get("dev_after"))
        rows.append(f"- calibrated toolken bias {_num(calibration.get('bias'), '+.4g')} on "
                    f"{calibration.get('dev_positions')} dev positions: dev toolken F1 "
                    f"{_num(before.get('f1'))} -> {_num(after.get('f1'))}")
    if not rows:
        return ""
    return ("## Dev figures (from the training run; not a benchmark's test figures)\n\n"
            + "\n".join(rows) + "\n")


def _num(v, spec: str = ".3f") -> str:
    """A figure as ``spec`` (a config is data: anything else is shown as it is)."""
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v) -> list:
    return v if isinstance(v, list) else []
