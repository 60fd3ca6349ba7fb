"""Style packs: one generator's weights plus what a front end needs to show its styles.

A pack is a folder, in standard formats so other tools can read it:

    pack.json            format version, generator config, styles, training record, licenses
    weights.safetensors  generator parameters, keyed by their path in the NNX module tree
    thumbs/<id>.jpg      a small picture of each style (attribution in pack.json)

Everything is validated on load, and each failure says what is wrong with which file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from .errors import UnknownStyleError, WeightsError, echo
from .generator import Generator, GeneratorConfig

FORMAT_VERSION = 1
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class StyleInfo:
    """What users see of one style: id for commands, names per language, credit."""

    id: str
    names: dict[str, str]                 # language code → display name ("en" required)
    thumbnail: str | None = None          # path relative to the pack folder
    source: str = ""                      # where the style picture comes from
    author: str = ""
    license: str = ""

    def name(self, lang: str = "en") -> str:
        return self.names.get(lang) or self.names.get(lang.split("-")[0]) or self.names["en"]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "names": self.names, "thumbnail": self.thumbnail,
                "source": self.source, "author": self.author, "license": self.license}


def find_style(styles: list[StyleInfo], style_id: str) -> int:
    """Index of a style by id, or by an unambiguous id prefix (friendly for chat captions)."""
    ids = [s.id for s in styles]
    wanted = style_id.strip().lower()  # chat apps capitalise the first word
    if wanted in ids:
        return ids.index(wanted)
    matches = [i for i, s in enumerate(ids) if wanted and s.startswith(wanted)]
    if not matches:  # then any word of the id: "wave" finds "great-wave"
        matches = [i for i, s in enumerate(ids)
                   if wanted and any(w.startswith(wanted) for w in re.split(r"[-_]", s))]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        several = ", ".join(ids[i] for i in matches)
        raise UnknownStyleError(f"'{echo(style_id)}' matches several styles: {several}.")
    known = ", ".join(ids)
    raise UnknownStyleError(f"Unknown style '{echo(style_id)}'. Available styles: {known}.")


@dataclass
class StylePack:
    """A loaded pack: the generator with weights, and its styles in index order."""

    config: GeneratorConfig
    styles: list[StyleInfo]
    generator: Generator
    root: Path | None = None
    training: dict[str, Any] = field(default_factory=dict)
    license_notes: str = ""
    palette: float = 0.0   # how far results move onto the style's colours (stylejax.colour)

    def index(self, style_id: str) -> int:
        """Index of a style by id, unambiguous prefix or word of an id (chat captions)."""
        return find_style(self.styles, style_id)

    def thumbnail_path(self, style_id: str) -> Path | None:
        info = self.styles[self.index(style_id)]
        if info.thumbnail is None or self.root is None:
            return None
        return self.root / info.thumbnail


def module_arrays(module: nnx.Module) -> dict[str, np.ndarray]:
    """A module's parameters by their dotted path in the NNX tree (the safetensors keys)."""
    state = nnx.state(module, nnx.Param)
    flat = {}
    for path, leaf in nnx.to_flat_state(state):
        flat[".".join(str(p) for p in path)] = np.asarray(leaf.get_value())
    return flat


def load_module_arrays(module: nnx.Module, arrays: dict[str, np.ndarray], where: str) -> None:
    """Set a module's parameters from `module_arrays` output, checking names, shapes, values."""
    state = nnx.state(module, nnx.Param)
    flat = nnx.to_flat_state(state)
    expected = {".".join(str(p) for p in path): leaf for path, leaf in flat}
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise WeightsError(
            f"{where} does not match the network its config describes "
            f"(missing {missing[:3]}, unexpected {extra[:3]})."
        )
    for key, leaf in expected.items():
        value = arrays[key]
        if value.shape != leaf.get_value().shape:
            raise WeightsError(
                f"{where}: tensor {key} has shape {value.shape}, "
                f"expected {leaf.get_value().shape}."
            )
        if not np.all(np.isfinite(value)):
            raise WeightsError(f"{where}: tensor {key} holds NaN or infinite values.")
        leaf.set_value(jnp.asarray(value, jnp.float32))
    nnx.update(module, state)


def save_pack(pack_dir: str | Path, generator: Generator, styles: list[StyleInfo], *,
              thumbnails: dict[str, np.ndarray] | None = None, training: dict | None = None,
              license_notes: str = "", palette: float = 0.0) -> Path:
    """Write a pack folder (the trainer's export and tests use this). `palette`: how far a
    result's colours move onto its style's, read from the style's thumbnail (0: not at all)."""
    if not 0.0 <= palette <= 1.0:
        raise ValueError(f"palette must be in [0, 1], not {palette}")
    root = Path(pack_dir)
    (root / "thumbs").mkdir(parents=True, exist_ok=True)
    if len(styles) != generator.config.num_styles:
        raise ValueError(f"{len(styles)} styles for a generator with "
                         f"{generator.config.num_styles} style slots")
    written = []
    for info in styles:
        thumb = None
        if thumbnails and info.id in thumbnails:
            from PIL import Image

            thumb = f"thumbs/{info.id}.jpg"
            Image.fromarray(thumbnails[info.id]).save(root / thumb, quality=88)
        written.append(StyleInfo(info.id, info.names, thumb, info.source, info.author,
                                 info.license))
    save_file(module_arrays(generator), str(root / "weights.safetensors"))
    meta = {
        "format_version": FORMAT_VERSION,
        "generator": generator.config.to_dict(),
        "styles": [s.to_dict() for s in written],
        "training": training or {},
        "license_notes": license_notes,
        "palette": float(palette),
    }
    (root / "pack.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n",
                                    encoding="utf-8")
    return root


def _parse_styles(raw: Any, n: int) -> list[StyleInfo]:
    if not isinstance(raw, list) or not raw:
        raise WeightsError("pack.json: 'styles' must be a non-empty list.")
    if len(raw) != n:
        raise WeightsError(f"pack.json lists {len(raw)} styles but the generator has {n} slots.")
    styles, seen = [], set()
    for i, s in enumerate(raw):
        if not isinstance(s, dict):
            raise WeightsError(f"pack.json: style #{i + 1} is not an object.")
        sid = s.get("id")
        if not isinstance(sid, str) or not _ID_RE.match(sid):
            raise WeightsError(f"pack.json: style #{i + 1} has an invalid id {sid!r} "
                               "(lowercase letters, digits, '-' and '_', at most 40).")
        if sid in seen:
            raise WeightsError(f"pack.json: style id '{sid}' appears twice.")
        seen.add(sid)
        thumb = s.get("thumbnail")
        if thumb is not None and not isinstance(thumb, str):
            raise WeightsError(f"pack.json: thumbnail of '{sid}' must be a file name.")
        names = s.get("names")
        if not isinstance(names, dict) or not isinstance(names.get("en"), str):
            raise WeightsError(f"pack.json: style '{sid}' needs names with an English ('en') name.")
        styles.append(StyleInfo(sid, {str(k): str(v) for k, v in names.items()},
                                s.get("thumbnail"), str(s.get("source", "")),
                                str(s.get("author", "")), str(s.get("license", ""))))
    return styles


def _read_meta(root: Path) -> tuple[GeneratorConfig, list[StyleInfo], dict, dict]:
    """pack.json validated: generator config, styles, training record, the raw metadata."""
    meta_path = root / "pack.json"
    if not meta_path.is_file():
        raise WeightsError(f"No style pack at '{root.name}': pack.json is missing.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"pack.json is not valid JSON ({err.__class__.__name__}).") from None
    if not isinstance(meta, dict):
        raise WeightsError("pack.json must hold an object.")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(f"Style pack format {version!r} is not supported "
                           f"(this version reads format {FORMAT_VERSION}).")
    try:
        config = GeneratorConfig.from_dict(meta["generator"])
    except (KeyError, TypeError, ValueError):
        raise WeightsError("pack.json: 'generator' must give num_styles, channels, res_blocks.") \
            from None
    styles = _parse_styles(meta.get("styles"), config.num_styles)
    training = meta.get("training") or {}
    if not isinstance(training, dict):
        raise WeightsError("pack.json: 'training' must be an object.")
    for s in styles:
        if s.thumbnail is not None:
            thumb = (root / s.thumbnail).resolve()
            if root.resolve() not in thumb.parents or not thumb.is_file():
                raise WeightsError(f"pack.json: thumbnail of '{s.id}' is missing or outside "
                                   "the pack.")
    palette = meta.get("palette", 0.0)
    if (not isinstance(palette, (int, float)) or isinstance(palette, bool)
            or not 0.0 <= palette <= 1.0):
        raise WeightsError("pack.json: 'palette' must be a number from 0 to 1.")
    if palette > 0 and any(s.thumbnail is None for s in styles):
        raise WeightsError("pack.json: a 'palette' needs every style's thumbnail.")
    return config, styles, training, meta


def read_pack_styles(pack_dir: str | Path) -> list[StyleInfo]:
    """The pack's styles without loading its weights (style lists, menus, id lookups)."""
    return _read_meta(Path(pack_dir))[1]


def load_pack(pack_dir: str | Path) -> StylePack:
    """Load and validate a pack folder."""
    root = Path(pack_dir)
    config, styles, training, meta = _read_meta(root)
    weights_path = root / "weights.safetensors"
    if not weights_path.is_file():
        raise WeightsError("Style pack has no weights.safetensors.")
    try:
        arrays = load_file(str(weights_path))
    except Exception as err:  # safetensors raises several types for damaged files
        raise WeightsError(f"weights.safetensors is damaged ({err.__class__.__name__}).") from None
    # Structure only: running the random initialisers compiled ~40 tiny XLA programs (~5 s of a
    # worker's start-up) for arrays the file replaces at once.
    generator = nnx.eval_shape(lambda: Generator(config, rngs=nnx.Rngs(0)))
    load_module_arrays(generator, arrays, "weights.safetensors")
    leftovers = [p for p, v in nnx.to_flat_state(nnx.state(generator))
                 if isinstance(v.get_value(), jax.ShapeDtypeStruct)]
    if leftovers:  # a variable that is not a parameter would stay without a value
        raise WeightsError(f"weights.safetensors leaves {leftovers[0]} unset.")
    return StylePack(config, styles, generator, root, dict(training),
                     str(meta.get("license_notes", "")), float(meta.get("palette", 0.0)))


def default_pack_dir() -> Path:
    """The pack shipped with the project (trained by the trainer; see docs/training.md)."""
    return Path(__file__).parent / "assets" / "packs" / "default"
