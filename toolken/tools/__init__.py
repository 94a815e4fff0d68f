"""Register a tool: ``Tool`` and ``@tool`` (``tool``), the ordered registry and pack loading
(``registry``), the argument language (``syntax``), HuggingFace models as tools (``hf_tools``),
model-API catalogues (``catalog``) and synthetic training data (``synth``)::

    from toolken.tools import tool, load_pack, ToolRegistry
"""

from .registry import ToolRegistry, load_pack
from .tool import (EMPTY_SCHEMA, PackError, Tool, ToolArgumentError, ToolError, ToolResult,
                   format_number, parse_call_args, render_value, tool)

__all__ = ["EMPTY_SCHEMA", "PackError", "Tool", "ToolArgumentError", "ToolError", "ToolRegistry",
           "ToolResult", "format_number", "load_pack", "parse_call_args", "render_value", "tool"]
