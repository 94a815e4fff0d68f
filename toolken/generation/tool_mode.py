"""Tool mode (ToolkenGPT sec. 3.3): when a toolken wins, the model writes that tool's
arguments. The tool's own prompt (its description and demos, or the k training examples of the
tool most similar to the question, then the question, the answer so far and ``<name>(``) is
prefilled on a per-tool cache that keeps the tool's fixed prefix; decoding is constrained to the
argument schema (``constrain``; with ``arg_names`` each argument follows its parameter's name,
in the demos too); the per-tool cache is rolled back to its prefix afterwards.
With ``arg_candidates`` > 1 several argument sets are written and the result most of them give
wins. The tool then runs (``Tool.call``: timeout, size limit, errors as results).
"""

from __future__ import annotations

import torch

from .config import GenerationConfig
from ..tools.arguments import context_numbers, context_strings, name_calls, parse_arguments
from .constrain import make_constraint
from .steps import GenerationError, new_cache, pick, step


class ToolMode:
    """Per-tool prefix caches and constrained argument decoding."""

    def __init__(self, model, registry, config: GenerationConfig, reuse_prefix: bool = True):
        self.model, self.registry, self.options = model, registry, config
        self.backend, self.max_arg_tokens = config.backend, config.max_arg_tokens
        self.reuse_prefix = reuse_prefix  # False: encode the whole tool prompt at every call
        self.prefix: dict[tuple, tuple[object, int]] = {}  # (tool, prompt head) -> (cache, length)

    def split_prompt(self, tool, question: str | None = None) -> tuple[str, str]:
        """(prefix, text after the question) of the tool's tool-mode prompt; with arg_demos,
        the prefix shows the training examples of the tool most similar to ``question``."""
        k = self.options.arg_demos
        demos = []
        if k and question is not None:
            pool = self.model.demo_pool(self.registry, self.options.arg_retriever)
            demos = pool.tool_demos(tool.name, question, k)
        if tool.prompt and "[QUESTION]" in tool.prompt:
            head, tail = tool.prompt.split("[QUESTION]", 1)
            if demos:  # the prompt's header (a block that is not a demo) is kept
                first = head.split("\n\n", 1)[0]
                header = "" if first.lstrip().startswith("Q:") else first + "\n\n"
                head = header + "\n\n".join(demos) + "\n\nQ: "
        else:
            shown = "\n\n".join(demos or tool.demos)
            head, tail = f"{tool.description}\n\n{shown}\n\nQ: ".lstrip(), "\nA:"
        if self.options.arg_names:  # the demos' calls written as the grammar will write them
            head = name_calls(head, tool.name, tool.parameters)
        return head, tail

    def _prefix_cache(self, tool, question: str | None = None):
        head, _ = self.split_prompt(tool, question)
        key = (tool.name, head)
        if key not in self.prefix or not self.reuse_prefix:
            if len(self.prefix) >= 64:  # retrieved demos: one head per question; keep it bounded
                del self.prefix[next(iter(self.prefix))]
            ids = self.model.tokenizer(head, add_special_tokens=True)["input_ids"]
            cache = new_cache(self.model)
            with torch.no_grad():
                step(self.model, ids, cache)
            self.prefix[key] = (cache, len(ids))
        return self.prefix[key]

    @torch.no_grad()
    def candidates(self, tool, question: str, answer_so_far: str, sample, stats) -> list[tuple[str, float]]:
        """arg_candidates argument texts with their log-likelihoods under the constraint: the
        first chosen by ``sample``, the others sampled at arg_temperature (seeded, so the
        same question gives the same candidates)."""
        cache, n_prefix = self._prefix_cache(tool, question)
        _, tail = self.split_prompt(tool)
        answer = answer_so_far if answer_so_far.startswith((" ", "\n")) else " " + answer_so_far
        text = f"{question}{tail}{answer}<{tool.name}>("
        ids = self.model.tokenizer(text, add_special_tokens=False)["input_ids"]
        V = self.model.vocab_size
        numbers = context_numbers(question + answer) if self.options.arg_numbers == "context" else None
        strings = context_strings(question + answer) if self.options.arg_strings == "context" else None
        out = []
        try:
            z0 = step(self.model, ids, cache)
            stats["prefilled"] += len(ids)
            n_context = cache.get_seq_length()
            for i in range(self.options.arg_candidates):
                gen = torch.Generator().manual_seed(i)
                choose = sample if i == 0 else (lambda z: pick(z, True, self.options.arg_temperature, 1.0, gen))
                constraint = make_constraint(tool.parameters, self.model.tokenizer, vocab_size=V,
                                             backend=self.backend, numbers=numbers, strings=strings,
                                             names=self.options.arg_names)
                cache.crop(n_context - cache.get_seq_length())  # back to the question
                out.append(self._decode(constraint, z0, cache, choose, stats))
        finally:
            cache.crop(n_prefix - cache.get_seq_length())  # roll back to the tool's prefix
        return out

    def _decode(self, constraint, z, cache, choose, stats) -> tuple[str, float]:
        V, written, logp = self.model.vocab_size, [], 0.0
        while not constraint.is_done():
            if len(written) >= self.max_arg_tokens:
                raise GenerationError(f"arguments longer than {self.max_arg_tokens} tokens")
            z = constraint.apply(z[:V].clone())
            tok = choose(z)
            logp += float(torch.log_softmax(z, -1)[tok])
            constraint.advance(tok)
            written.append(tok)
            stats["decoded"] += 1
            if not constraint.is_done():
                z = step(self.model, [tok], cache)
        return self.model.tokenizer.decode(written), logp

    def call(self, tool, question: str, answer_so_far: str, sample, stats, trace,
             config: GenerationConfig):
        """Write the arguments and run the tool (``config``: its timeout and result size); with
        several candidates, each runs and the result most of them give wins (ties: the likelier
        candidate). Returns the ToolResult."""
        cands = self.candidates(tool, question, answer_so_far, sample, stats)
        runs = []  # (text, args or None, ToolResult or error, logp)
        for text, logp in cands:
            try:
                runs.append((text, *run_arguments(tool, text, config), logp))
            except ValueError as e:
                runs.append((text, None, f"arguments: {e}", logp))
        ok = [r for r in runs if r[1] is not None and r[2].ok]
        if len(cands) > 1:
            trace.candidates = [{"argument_text": t, "logprob": round(lp, 4),
                                 "result": res.text if a is not None and res.ok else None}
                                for t, a, res, lp in runs]
        if ok:
            votes = {}
            for r in ok:
                votes[r[2].text] = votes.get(r[2].text, 0) + 1
            best = max(ok, key=lambda r: (votes[r[2].text], r[3]))
        else:
            best = runs[0]
        trace.argument_text, trace.arguments = best[0], best[1]
        if best[1] is None:
            raise GenerationError(best[2])
        return best[2]


def run_arguments(tool, text: str, config: GenerationConfig):
    """``(arguments, ToolResult)``: ``text`` (an argument list, ``12, 5)``) parsed for ``tool``
    (ValueError when it does not fit) and the tool run under ``config``'s timeout and result
    size; what tool mode's candidates and a call written in the answer both do."""
    args = parse_arguments(text, tool.parameters)
    return args, tool.call(args, timeout=config.tool_timeout, max_chars=config.max_result_chars)
