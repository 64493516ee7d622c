"""The benchmark's results as records, and the side-by-side report printed from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histo_encoders.tools.benchmark import BenchmarkOptions

SUPPLY = "tiff_reader"  # the pipeline's own supply: what the other loaders are compared with


@dataclass(frozen=True)
class LoaderResult:
    """One loader's best run: ``count`` items (output tiles, or stored tiles for a decode
    floor) in ``seconds``, the cores it kept busy, every run's rate, and what it was."""

    name: str
    label: str
    count: int
    seconds: float
    cores_used: float
    stored: bool = False
    runs: tuple[float, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Items per second (output tiles, or stored tiles when ``stored``)."""
        return self.count / self.seconds

    def as_dict(self) -> dict[str, Any]:
        unit = "stored_tiles" if self.stored else "tiles"
        return {
            unit: self.count,
            "seconds": self.seconds,
            f"{unit}_per_s": self.rate,
            "cores_used": self.cores_used,
            "runs": list(self.runs),
            **self.details,
        }


@dataclass(frozen=True)
class ModelResult:
    """Model-only vs end-to-end tiles/s on the same tiles."""

    encoder: str
    device: str
    precision: str
    tiles: int
    model_only_tiles_per_s: float
    end_to_end_tiles_per_s: float
    reader: str

    @property
    def end_to_end_fraction(self) -> float:
        """End-to-end throughput as a fraction of model-only."""
        return self.end_to_end_tiles_per_s / self.model_only_tiles_per_s


@dataclass(frozen=True)
class BenchmarkResult:
    """Everything one benchmark run measured, with the slide, machine and options."""

    slide: Mapping[str, Any]
    machine: Mapping[str, Any]
    options: BenchmarkOptions
    loaders: Mapping[str, LoaderResult]
    model: ModelResult | None = None

    @property
    def stored_tiles_per_output_tile(self) -> float:
        """Stored tiles the pipeline decoded per output tile (the decode floor's exchange rate)."""
        supply = self.loaders[SUPPLY]
        return supply.details["stored_tiles_decoded"] / max(1, supply.count)

    def output_rate(self, name: str) -> float:
        """A loader's rate in output tiles/s (decode floors converted)."""
        loader = self.loaders[name]
        return loader.rate / self.stored_tiles_per_output_tile if loader.stored else loader.rate

    def ratios(self) -> dict[str, Any]:
        """The pipeline's supply against every other loader, in output tiles/s."""
        ratios: dict[str, Any] = {"stored_tiles_per_output_tile": self.stored_tiles_per_output_tile}
        for name, loader in self.loaders.items():
            if loader.stored:
                ratios[f"{name}_output_tiles_per_s"] = self.output_rate(name)
        reference = [name for name in self.loaders if name.startswith("openslide_loop")]
        ratios["reference_loader"] = reference[0] if reference else None
        for name in self.loaders:
            if name != SUPPLY:
                ratios[f"{SUPPLY}_vs_{name}"] = self.output_rate(SUPPLY) / self.output_rate(name)
        return ratios

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable), as ``--json`` saves it."""
        result: dict[str, Any] = {
            "slide": dict(self.slide),
            "machine": dict(self.machine),
            "options": asdict(self.options),
            "loaders": {name: loader.as_dict() for name, loader in self.loaders.items()},
            "ratios": self.ratios(),
        }
        if self.model is not None:
            result["model"] = {
                **asdict(self.model),
                "end_to_end_fraction": self.model.end_to_end_fraction,
            }
        return result


def format_report(result: BenchmarkResult) -> str:
    """A printable side-by-side table of :func:`run_benchmark`'s result."""
    slide, machine, ratios = result.slide, result.machine, result.ratios()
    lines = [
        f"Slide: {slide['path']} ({slide['width']}x{slide['height']} px, {slide['mpp']:g} um/px,"
        f" vendor {slide['vendor']})",
        f"Work: {slide['tiles']} tiles, {slide['read_size']} px regions at level {slide['level']}"
        f" -> {slide['tile_size']} px at {slide['target_mpp']:g} um/px, normalized float batches",
        f"Machine: {machine['cpus']} CPUs, torch {machine['torch']} (1 intra-op thread while"
        f" timing loaders), device {machine['device']}",
        "",
        f"{'loader':<52}{'tiles/s':>10}{'vs openslide':>14}{'cores used':>12}",
    ]
    reference = ratios["reference_loader"]
    for name, loader in result.loaders.items():
        rate = result.output_rate(name)
        versus = f"{rate / result.output_rate(reference):.1f}x" if reference else "-"
        lines.append(f"{loader.label:<52}{rate:>10.1f}{versus:>14}{loader.cores_used:>12.2f}")
    lines.append("")
    for loader in result.loaders.values():
        if loader.stored:
            lines.append(
                f"{loader.label}: {loader.rate:.0f} stored tiles/s"
                f" ({loader.count} {loader.details['codec']} tiles)"
            )
    for key, value in ratios.items():
        if key.startswith(f"{SUPPLY}_vs_"):
            lines.append(f"embed supply / {key.removeprefix(f'{SUPPLY}_vs_')}: {value:.2f}x")
    if result.model is not None:
        m = result.model
        lines += [
            "",
            f"Model {m.encoder} on {m.device} ({m.precision}), {m.tiles} tiles:",
            f"  model only   {m.model_only_tiles_per_s:10.1f} tiles/s",
            f"  end to end   {m.end_to_end_tiles_per_s:10.1f} tiles/s  (reader {m.reader})",
            f"  end to end / model only: {m.end_to_end_fraction:.0%}",
        ]
    return "\n".join(lines)
