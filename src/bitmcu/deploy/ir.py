"""The integer model as data: one sequence of ops (ops.py: each op's semantics, checks,
reference, buffer and C table row), produced from a checkpoint (train/lower.py) and saved as
model.npz by export."""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.errors import BitmcuError
from .ops import (  # noqa: F401  (re-exported: the ops are the IR's parts)
    CHUNK_ROWS,
    CLASS_VALUE,
    INT32_MAX,
    MAX_DIM,
    MAX_FRONT,
    OPS,
    RING_ROWS,
    TERNARY_MAX_IN,
    Cell,
    ConvLayer,
    Embed,
    FCLayer,
    Latent,
    Op,
    Pixels,
    PoolLayer,
    Sample,
    Shape,
    ShiftNorm,
    StageLayer,
    TableRow,
    Tokens,
    Weighted,
    accumulator_bound,
    check_sequence,
)

MAGIC = 0x554D4942  # "BIMU", also in bitmcu.h
FORMAT_VERSION = 9  # BITMCU_FORMAT_VERSION in bitmcu.h (2: 2bitsym rows in fours, 3: binary
#                    rows in eights, 4: depth multipliers, map_bytes, 5: decoders, 6: nbytes,
#                    checksums, the table's end marker, 7: the memory plan's offsets, 8: each
#                    row's op function, the model's front end pointer gone, 9: text models:
#                    the ops embed, cell and sample)
IR_VERSION = 2  # model.npz (1: three lists, front, layers and stages; 2: one op sequence)


@dataclass
class IntModel:
    """An integer model: its ops in order (the first one its input: :class:`Pixels` or
    :class:`Latent`) and what every op shares."""

    ops: list[Op]
    n_classes: int
    act_max: int  # largest activation value (2^act_bits - 1)
    config_hash: int  # uint32, from the training config
    name: str = "model"
    bias_unit: bool = False  # each fc layer's last input is the largest of the others

    @classmethod
    def classifier(cls, size: int, n_classes: int, act_max: int, layers: list[FCLayer],
                   config_hash: int, name: str = "model", front: list | None = None,
                   bias_unit: bool = False) -> IntModel:
        """An image classifier: pixels, the front end's map ops, norm, the fc layers."""
        return cls([Pixels(size), *(front or []), ShiftNorm(), *layers], n_classes, act_max,
                   config_hash, name, bias_unit)

    @classmethod
    def decoder(cls, size: int, n_classes: int, act_max: int, layers: list[FCLayer],
                stages: list[StageLayer], config_hash: int, name: str, latent: int,
                latent_scale: int, mixture: tuple | None = None) -> IntModel:
        """A generator of size x size images: latent, fc layers, stages; ``mixture`` the
        (cum, centre, sd) tables of a mixture prior (ops.Latent)."""
        return cls([Latent(latent, latent_scale, size, *(mixture or ())), *layers, *stages],
                   n_classes, act_max, config_hash, name)

    @classmethod
    def chars(cls, vocab: str, context: int, embed: np.ndarray, cells: list[Cell],
              logits: FCLayer, sample: Sample, config_hash: int, name: str) -> IntModel:
        """A character model: tokens, embed, cells, the logits, sample (one step per token)."""
        return cls([Tokens(vocab, context), Embed(embed), *cells, logits, sample], len(vocab),
                   255, config_hash, name)

    def with_temperature(self, temperature: float) -> IntModel:
        """The same character model sampling at another temperature."""
        old = self.ops[-1]
        return replace(self, ops=[*self.ops[:-1], Sample.at(old.nats, temperature)]).validate()

    # ---------------------------------------------------------------- what the ops say
    @property
    def input(self) -> Op:
        return self.ops[0]

    @property
    def generative(self) -> bool:
        """Whether the model makes images (its input a latent) rather than classifying them."""
        return isinstance(self.input, Latent)

    @property
    def classifies(self) -> bool:
        """Whether the model classifies images (its input the pixels; it has test images)."""
        return isinstance(self.input, Pixels)

    @property
    def is_text(self) -> bool:
        """Whether the model generates text, token for token."""
        return isinstance(self.input, Tokens)

    @property
    def input_size(self) -> int:
        """Side of the model's square image: the one a classifier takes, a decoder makes."""
        return self.input.side

    @property
    def n_input(self) -> int:
        """Pixels of that image."""
        return self.input_size * self.input_size

    @property
    def latent(self) -> int:
        """A decoder's latent size (0 for a classifier)."""
        return self.input.size if self.generative else 0

    @property
    def latent_scale(self) -> int:
        """A decoder's latent sampler's multiplier (rng.latent_scale; 0 for a classifier)."""
        return self.input.scale if self.generative else 0

    def with_latent_scale(self, scale: int) -> IntModel:
        """The same decoder sampling with another multiplier (another temperature)."""
        return replace(self, ops=[replace(self.input, scale=scale), *self.ops[1:]]).validate()

    def find(self, *names: str) -> list[Op]:
        """The ops of these names (ops.OPS), in order."""
        return [op for op in self.ops if op.name in names]

    def shapes(self) -> list[Shape]:
        """The value each op makes, in order."""
        x, out = None, []
        for op in self.ops:
            x = op.out(x, self)
            out.append(x)
        return out

    @property
    def n_features(self) -> int:
        """Inputs of the first fc layer before any bias unit: what the norm op makes (0 for a
        decoder)."""
        norm = [i for i, op in enumerate(self.ops) if isinstance(op, ShiftNorm)]
        return self.shapes()[norm[0]].size if norm else 0

    @property
    def front(self) -> list[Op]:
        """A CNN's front end: its map ops (conv1, dw, pool)."""
        return [op for op in self.ops if isinstance(op, ConvLayer | PoolLayer)]

    @property
    def max_map(self) -> int:
        """Largest per-channel feature map the front end writes (bytes)."""
        return max((op.out_side ** 2 for op in self.front), default=0)

    @property
    def max_in(self) -> int:
        """Entries of the nonzero list: the widest input of any op."""
        return max(op.nz_inputs(self, i) for i, op in enumerate(self.ops))

    @property
    def max_out(self) -> int:
        """int32 accumulators at once: the most any op needs."""
        return max(op.acc_rows(self, i) for i, op in enumerate(self.ops))

    @property
    def weight_bytes(self) -> int:
        return sum(op.nbytes for op in self.ops)

    def validate(self) -> IntModel:
        """Check that the engine runs this sequence of ops, and each op's input, parameters
        and weights (ops.Op.check); the last op must make what the input op promises."""
        if not 1 <= self.act_max <= 255:
            raise BitmcuError(f"activation maximum {self.act_max} must be 1..255 (8-bit)")
        check_sequence(self.ops)
        x = None
        for i, op in enumerate(self.ops):
            op.check(x, self, f"op {i} ({op.name})")
            x = op.out(x, self)
        want, what = self.input.makes(self)
        if x != want:
            raise BitmcuError(f"the model makes {x} ({x.kind}); it must make {want} ({what})")
        return self

    # ---------------------------------------------------------------- serialization
    def to_bytes(self) -> bytes:
        meta = {"format": "bitmcu-ir", "format_version": FORMAT_VERSION,
                "ir_version": IR_VERSION, "name": self.name, "n_classes": self.n_classes,
                "act_max": self.act_max, "config_hash": self.config_hash,
                "bias_unit": self.bias_unit, "ops": [op.meta() for op in self.ops]}
        arrays = {f"{k}_{i}": a for i, op in enumerate(self.ops) for k, a in op.arrays().items()}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(self.to_bytes())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> IntModel:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("format") != "bitmcu-ir" or meta.get("ir_version") != IR_VERSION:
                    raise BitmcuError(f"{path}: not a bitmcu integer model of this version "
                                      f"(IR {IR_VERSION}: one op sequence); re-run `bitmcu "
                                      "export`")
                per_op = [{} for _ in meta["ops"]]  # op index -> its arrays (w_3: op 3's w)
                for f in z.files:
                    if f != "meta":
                        k, _, i = f.rpartition("_")
                        per_op[int(i)][k] = z[f]
                ops = []
                for i, m in enumerate(meta["ops"]):
                    if m.get("op") not in OPS:
                        raise BitmcuError(f"{path}: op {i} is {m.get('op')!r}, which this "
                                          f"bitmcu does not know ({', '.join(OPS)})")
                    ops.append(OPS[m["op"]].from_meta(m, per_op[i]))
                model = cls(ops, meta["n_classes"], meta["act_max"], meta["config_hash"],
                            meta.get("name", "model"), bool(meta.get("bias_unit", False)))
        except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile) as e:
            raise BitmcuError(f"{path}: not a readable bitmcu integer model, truncated or "
                              f"changed ({e}); re-run `bitmcu export`") from None
        return model.validate()
