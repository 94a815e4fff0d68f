# my_pack.py
from toolken import HFModelTool, load_pack, tool
from toolken.tools.hf_tools import minilm_folder


@tool(demos=["Q: 12 of the 30 pupils in a class walk to school. What percentage walk?\n"
             "A: 12 of 30 pupils is <percent>(12, 30)=40 percent.",
             "Q: A box holds 80 eggs and 6 of them are cracked. What share of the eggs, in "
             "percent, is cracked?\nA: 6 of 80 eggs is <percent>(6, 80)=7.5 percent.",
             "Q: Out of 64 games, a team won 48. Give its win rate in percent.\n"
             "A: 48 of 64 games is <percent>(48, 64)=75 percent."])
def percent(part: float, whole: float) -> float:
    """The percentage that part is of whole."""
    return 100 * part / whole


def build():
    pack = load_pack("tools/funcqa.py")  # the checkpoint's 13 tools first, in its order
    pack.add(percent)
    similarity = pack.add(HFModelTool(minilm_folder(), task="sentence-similarity",
                                      name="similarity"))  # all-MiniLM-L6-v2, loaded on first call
    similarity.demos = [
        'Q: How similar are "A cat sits on the mat." and "A kitten lies on the rug."?\n'
        'A: Their similarity is <similarity>("A cat sits on the mat.", '
        '"A kitten lies on the rug.")=0.56.',
        'Q: How close in meaning are "The bank is closed." and "Stocks fell today."?\n'
        'A: Their similarity is <similarity>("The bank is closed.", "Stocks fell today.")=0.24.',
        'Q: Do "I am hungry." and "I would like to eat." mean the same? Give their similarity.\n'
        'A: Their similarity is <similarity>("I am hungry.", "I would like to eat.")=0.55.',
        'Q: Give the semantic closeness of "The road is icy." and "Birds sing at dawn.".\n'
        'A: Their similarity is <similarity>("The road is icy.", "Birds sing at dawn.")=0.05.']
    return pack
