"""Model inputs (texts, images) and model loading."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .families import _config_int

BUILTIN_TEXTS: tuple[str, ...] = (
    # science
    "Photosynthesis is the slow chemistry that keeps most life on Earth supplied with energy. Inside the "
    "chloroplasts of a leaf, pigments absorb red and blue light and pass the captured energy along a chain of "
    "proteins embedded in thin membranes. Water molecules are split in the process, which is why plants release "
    "oxygen, and the energy is stored for a short while in two carrier molecules. In a second set of reactions, "
    "which do not need light directly, the plant uses those carriers to attach carbon dioxide from the air to a "
    "five-carbon sugar. After several turns of this cycle the cell has built a small sugar that it can burn for "
    "energy, link into starch for storage, or weave into cellulose for its walls. The enzyme that grabs carbon "
    "dioxide is famously inefficient: it sometimes binds oxygen by mistake, and on hot, dry days this mistake "
    "wastes a noticeable share of the plant's effort. Maize, sugar cane and many desert plants have evolved ways "
    "to concentrate carbon dioxide around the enzyme, either in special cells or by opening their pores only at "
    "night. Researchers who study crop yields pay close attention to these variations, because a few percent more "
    "efficiency in a staple crop would feed millions of people without clearing any new land.",
    # history
    "When movable type reached Europe in the middle of the fifteenth century, books did not suddenly become cheap, "
    "but they became far more numerous. A single workshop with a press, a few compositors and a supply of paper "
    "could produce several hundred copies of a text in the time a scribe needed for one. Early printers chose "
    "their titles carefully, since an unsold edition could ruin them: religious works, grammars, calendars and "
    "legal handbooks were safe choices, while new literature was a gamble. Within fifty years presses operated in "
    "more than two hundred towns, and the price of an ordinary book had fallen enough that merchants, lawyers and "
    "schoolmasters could own small libraries. Historians still argue about how much the press changed ways of "
    "thinking. Some stress that identical copies allowed scholars in distant cities to compare notes on the same "
    "page and to correct errors in later editions. Others point out that pamphlets spread rumours and quarrels as "
    "quickly as they spread learning, and that censorship grew alongside the new trade. What is not disputed is "
    "that the volume of written material in circulation rose by orders of magnitude, and that reading, once a "
    "specialised skill, slowly became an expectation for large parts of the population.",
    # cooking instructions
    "To make a simple vegetable soup for four people, start by washing and chopping two onions, three carrots, two "
    "sticks of celery and a couple of medium potatoes into pieces of roughly the same size. Warm two tablespoons of "
    "olive oil in a heavy pot over medium heat and add the onions with a pinch of salt. Stir them now and then for "
    "about eight minutes, until they are soft and translucent but not brown. Add the carrots and celery and cook for "
    "another five minutes, then stir in a crushed clove of garlic and a teaspoon of dried thyme. Pour in one and a "
    "half litres of stock, add the potatoes and a bay leaf, and bring everything to a gentle boil. Lower the heat, "
    "cover the pot partly and let it simmer for twenty to twenty-five minutes, until a knife slides easily through "
    "the potatoes. Taste the soup and adjust the seasoning with salt, pepper and a squeeze of lemon juice. If you "
    "prefer a smooth texture, blend half of the soup and stir it back in; this keeps some pieces while thickening "
    "the broth. Serve it hot with crusty bread, and keep any leftovers in the fridge for up to three days.",
    # narrative fiction
    "The lighthouse keeper had not expected visitors in November, so when the knock came she assumed it was the wind "
    "again, rattling the loose latch on the outer door. It knocked a second time, politely, and she put down her "
    "mug. On the step stood a boy of about twelve, soaked to the knees, holding a cardboard box that was making "
    "small, indignant noises. He explained, in a rush, that the ferry had left without him, that his aunt lived on "
    "the far side of the island, and that the box contained a goose which had absolutely refused to stay behind. "
    "The keeper looked at the sky, which was the colour of wet slate, and at the sea, which was worse. She told him "
    "that nobody was crossing the causeway tonight, goose or no goose, and that he had better come in and dry his "
    "socks by the stove. The boy sat in the kitchen while she telephoned his aunt, and the goose, released from its "
    "box, inspected every corner of the room with great seriousness. By the time the storm reached its peak they "
    "were playing cards at the table, the lamp above them turning patiently, and the goose had fallen asleep on a "
    "pile of old charts as if it had always lived there.",
    # programming / technical
    "A hash table stores key and value pairs in an array and uses a hash function to decide where each key belongs. "
    "To insert a pair, the program computes the hash of the key, reduces it modulo the length of the array, and "
    "writes the pair into that slot. Two different keys can land in the same slot, which is called a collision. "
    "One common remedy, separate chaining, keeps a short list in every slot and appends colliding pairs to it. "
    "Another, open addressing, probes the following slots in a fixed order until it finds an empty one. Either way, "
    "lookups stay fast only while the table is not too full, so implementations track the load factor, the number "
    "of stored pairs divided by the number of slots, and grow the array when it passes a threshold such as three "
    "quarters. Growing means allocating a larger array and re-inserting every pair, which is expensive, but because "
    "the size usually doubles, the cost averaged over many insertions remains constant. A poor hash function that "
    "maps many keys to a few slots destroys this guarantee, which is why language runtimes randomise their string "
    "hashes: an attacker who could predict collisions might otherwise slow a web server down with carefully chosen "
    "request parameters.",
    # news report
    "The town council voted on Tuesday evening to convert the disused railway goods yard into a public park with a "
    "playground, a community garden and a covered market space. The decision followed two years of consultation in "
    "which residents submitted more than nine hundred comments, many of them asking for more trees and safer "
    "walking routes to the nearby primary school. Under the approved plan, the old brick warehouse will be kept and "
    "repaired to house the market on weekends and a youth club on weekday afternoons. Construction is expected to "
    "begin next spring and to last about eighteen months, funded partly by a regional grant and partly by the sale "
    "of a small plot at the northern edge of the site for housing. Not everyone was pleased. Several shop owners on "
    "the high street warned that a weekend market could draw customers away from their businesses, and one "
    "councillor argued that the housing plot should be larger to ease the local shortage. The mayor said the "
    "council would review the market rules after its first year and promised that local traders would be offered "
    "stalls at reduced rent. A public meeting to present the final designs is scheduled for the end of the month.",
    # legal / contract
    "This agreement is entered into by the landlord and the tenant named above and governs the rental of the "
    "residential property described in the first schedule. The tenancy begins on the start date and continues for "
    "a fixed term of twelve months, after which it will continue from month to month unless either party gives "
    "written notice of at least two months. The tenant shall pay the monthly rent in advance on the first day of "
    "each month by bank transfer to the account specified by the landlord. A deposit equal to one month of rent is "
    "payable before the start date and will be held in a government-approved protection scheme. The tenant agrees "
    "to keep the property clean and in good condition, to report any damage or needed repairs promptly, and not to "
    "make alterations without the prior written consent of the landlord, which shall not be unreasonably withheld. "
    "The landlord is responsible for repairs to the structure, the exterior, and the installations for water, gas, "
    "electricity and heating. Either party may enter into discussions about renewal during the final two months of "
    "the fixed term. Any notice under this agreement must be in writing and delivered by hand, by post, or by email "
    "to the addresses listed in the second schedule.",
    # dialogue
    "\"Are you sure this is the right trail?\" asked Maya, squinting at the faded sign. \"It says four kilometres to "
    "the lake, but we've been walking for an hour.\" Daniel unfolded the map for the third time and turned it until "
    "the river on the paper lined up with the river below them. \"We took the long loop,\" he admitted. \"The short "
    "path was closed after the landslide, remember? There was a notice at the car park.\" \"I remember a notice. I "
    "don't remember agreeing to a marathon.\" She sat down on a flat rock and pulled a bag of dried apricots out of "
    "her pocket. \"How much further, honestly?\" \"Maybe forty minutes. The climb is mostly behind us, and after the "
    "bridge it's flat all the way to the shore.\" \"You said that about the last bridge.\" \"That was a different "
    "bridge,\" he said, with as much dignity as he could manage. Maya laughed, offered him an apricot, and stood "
    "up. \"Fine. But if there is no lake at the end of this, you're carrying the backpack home.\" They set off "
    "again, and twenty minutes later, through a gap in the pines, they saw the water shining below them.",
    # mathematics
    "Suppose a fair six-sided die is rolled repeatedly and we want the expected number of rolls until a six first "
    "appears. Each roll succeeds with probability one in six, independently of the others, so the number of rolls "
    "follows a geometric distribution. Its expectation is the reciprocal of the success probability, which gives "
    "six rolls on average. One way to see this is to condition on the first roll: with probability one sixth we "
    "are done after a single roll, and with probability five sixths we have used one roll and face exactly the "
    "same problem again. Writing E for the expectation, this gives E = 1 + (5/6) E, and solving the equation yields "
    "E = 6. The variance is larger than many people guess. For a geometric distribution with success probability p "
    "it equals (1 - p) / p squared, which here is thirty, so the standard deviation is about 5.5 rolls. In practice "
    "this means that waiting ten or fifteen rolls for a six is not unusual at all. The probability of needing more "
    "than twenty rolls is (5/6) to the power twenty, roughly 2.6 percent, small but far from negligible, which is "
    "why long droughts of sixes happen in almost every evening of board games.",
    # geography / travel
    "The coastal road south of the city follows the cliffs for nearly sixty kilometres, dipping into small fishing "
    "villages and climbing again past terraces of olive trees and abandoned stone watchtowers. In spring the "
    "hillsides are covered with yellow broom and wild thyme, and the air smells of salt and resin. Most travellers "
    "stop at the harbour town halfway along, where a market sells grilled sardines, almond pastries and cheap "
    "ceramic plates painted with lemons. A steep path behind the church leads to a ruined castle whose walls still "
    "frame a wide view of the bay. In summer the road is crowded and the buses run every hour, but between October "
    "and April it is quiet enough that you can walk long stretches without meeting a car. The weather then is mild, "
    "though sudden storms roll in from the sea and can close the lower sections for a day or two. Accommodation "
    "ranges from family guest houses with four rooms to a large hotel built in the nineteen-sixties, whose "
    "concrete balconies divide local opinion. Anyone who enjoys swimming should bring shoes for the rocky beaches "
    "and remember that the water stays cold until well into June.",
)
"""Ten varied English passages written for this project (science, history, cooking, fiction, computing, news,
a contract, dialogue, probability, travel), each long enough for a few hundred tokens."""


def load_texts(path: str | Path | None) -> list[str]:
    """One text per non-empty line of ``path`` (UTF-8), or ``BUILTIN_TEXTS`` if ``path`` is None."""
    if path is None:
        return list(BUILTIN_TEXTS)
    texts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"{path} has no non-empty line")
    return texts


def _forward_params(model: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def max_positions(model: nn.Module, tokenizer=None) -> int | None:
    """The longest input the model (and its tokenizer) accepts, or None when neither says."""
    cfg = getattr(model, "config", None)
    vals = [_config_int(cfg, "max_position_embeddings", "max_sequence_length", "n_positions")]
    tl = getattr(tokenizer, "model_max_length", None)
    if isinstance(tl, int) and 0 < tl < 10**9:
        vals.append(tl)
    vals = [v for v in vals if v]
    return min(vals) if vals else None


def text_batches(
    model: nn.Module, tokenizer, texts: Sequence[str], *, max_tokens: int = 256, batch_size: int = 4,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[dict, torch.Tensor]]:
    """Tokenise ``texts`` (truncated to ``max_tokens``, right-padded) into ``(model inputs, token mask (B, L))``.

    Passes ``input_ids`` and ``attention_mask`` (plus ``token_type_ids`` when the model's forward names it, and
    ``use_cache=False`` when it accepts it). A tokenizer without a pad token gets its EOS / UNK token as padding
    (the mask excludes it), or batches of one if it has neither.
    """
    params = _forward_params(model)
    pad_ok = tokenizer.pad_token is not None
    if not pad_ok:
        for cand in (getattr(tokenizer, "eos_token", None), getattr(tokenizer, "unk_token", None)):
            if cand is not None:
                tokenizer.pad_token = cand
                pad_ok = True
                break
    bs = batch_size if pad_ok else 1
    padding_side = getattr(tokenizer, "padding_side", "right")
    try:
        tokenizer.padding_side = "right"
        for i in range(0, len(texts), bs):
            enc = tokenizer(list(texts[i : i + bs]), truncation=True, max_length=max_tokens, padding=pad_ok,
                            return_tensors="pt")
            mask = enc.get("attention_mask")
            if mask is None:
                mask = torch.ones_like(enc["input_ids"])
            inputs = {"input_ids": enc["input_ids"].to(device), "attention_mask": mask.to(device)}
            if "token_type_ids" in enc and "token_type_ids" in params:
                inputs["token_type_ids"] = enc["token_type_ids"].to(device)
            if "use_cache" in params:
                inputs["use_cache"] = False
            yield inputs, mask.bool()
    finally:
        tokenizer.padding_side = padding_side


def synthetic_images(num: int, size: int, *, channels: int = 3, seed: int = 0) -> list[np.ndarray]:
    """``num`` deterministic ``(size, size, channels)`` uint8 images: smooth gradients, stripes, blobs and noise."""
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    out = []
    for i in range(num):
        rng = np.random.default_rng(seed * 7919 + i)
        img = np.empty((size, size, channels))
        for c in range(channels):
            f = rng.uniform(1, 6, size=2)
            ph = rng.uniform(0, 2 * np.pi)
            g = rng.uniform(-1, 1, size=2)
            chan = 0.5 + 0.2 * np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + ph) + 0.2 * (g[0] * xx + g[1] * yy)
            for _ in range(3):
                cx, cy, r, a = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25), rng.uniform(-0.4, 0.4)
                chan += a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            img[..., c] = chan + 0.05 * rng.standard_normal((size, size))
        out.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return out


def _load_image_files(images_dir: str | Path, size: int, channels: int) -> list[np.ndarray]:
    from PIL import Image

    exts = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
    files = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in exts)
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(exts))}) in {images_dir}")
    mode = "RGB" if channels == 3 else "L"
    out = []
    for p in files:
        with Image.open(p) as im:
            arr = np.asarray(im.convert(mode).resize((size, size), Image.BILINEAR))
        out.append(arr if arr.ndim == 3 else arr[..., None])
    return out


def image_batches(
    model: nn.Module, *, images_dir: str | Path | None = None, num_images: int = 8, batch_size: int = 4,
    seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, processor=None,
) -> tuple[list[tuple[dict, None]], str]:
    """ViT inputs: ``([(dict(pixel_values=(B, C, S, S)), None), ...], description)``.

    Images come from ``images_dir`` (resized to ``config.image_size``) or are ``synthetic_images`` (deterministic,
    ``seed``). ``processor`` (an image processor) normalises them when given; otherwise pixels are scaled to [0, 1]
    and normalised with mean 0.5 / std 0.5 per channel (the ViT checkpoints' convention). The mask is None: every
    position (CLS + patches) is real.
    """
    cfg = model.config
    size = cfg.image_size if isinstance(cfg.image_size, int) else int(cfg.image_size[0])
    channels = getattr(cfg, "num_channels", 3)
    if images_dir is not None:
        imgs = _load_image_files(images_dir, size, channels)
        desc = f"{len(imgs)} images from {images_dir}, resized to {size}x{size}"
    else:
        imgs = synthetic_images(num_images, size, channels=channels, seed=seed)
        desc = f"{len(imgs)} deterministic SYNTHETIC images (seed {seed}), {size}x{size} (no --images given)"
    batches = []
    for i in range(0, len(imgs), batch_size):
        chunk = imgs[i : i + batch_size]
        if processor is not None:
            pix = processor(images=[im for im in chunk], return_tensors="pt")["pixel_values"]
        else:
            arr = np.stack(chunk).astype(np.float32) / 255.0
            pix = torch.from_numpy((arr - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()
        if dtype is not None:
            pix = pix.to(dtype)
        batches.append(({"pixel_values": pix.to(device)}, None))
    return batches, desc


def load_model(path: str, *, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False):
    """``AutoModel.from_pretrained(path)`` (falling back to ``AutoModelForCausalLM``) in ``dtype`` on ``device``, eval.

    ``dtype``: ``float32`` / ``bfloat16`` / ``float16`` / ``auto`` (the checkpoint's). Remote-code checkpoints (LLaDA,
    old Phi) need ``trust_remote_code=True``; without it the error says so. LLaDA needs neither: its model_type
    is registered with the Auto classes, which then build this package's ``LLaDAModelLM`` (never a directory's
    copied code, even with ``trust_remote_code``).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from ..code_identity import report_code
    from ..llada import register_auto_classes

    register_auto_classes()
    llada = False
    try:
        llada = AutoConfig.from_pretrained(path).model_type == "llada"
    except (ValueError, KeyError, OSError):
        pass  # another family that needs remote code: the load below says so
    if llada:
        trust_remote_code = False  # registered: the package's classes, not the directory's copies
        if Path(path).expanduser().is_dir():
            report_code(Path(path).expanduser())
    kw = {"trust_remote_code": trust_remote_code, "dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    errors = []
    for auto in (AutoModel, AutoModelForCausalLM):
        try:
            model = auto.from_pretrained(path, **kw)
            break
        except (ValueError, KeyError, OSError) as e:
            errors.append(f"{auto.__name__}: {e}")
    else:
        hint = "" if trust_remote_code else " (a remote-code checkpoint such as LLaDA needs --trust-remote-code)"
        raise ValueError(f"could not load {path}{hint}: " + " | ".join(errors))
    return model.to(device).eval()


